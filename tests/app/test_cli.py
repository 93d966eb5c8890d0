"""The audiorec command line: exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main


def test_generate_prints_facts_and_writes_the_world(tmp_path, capsys):
    rc = main(
        ["generate", "--scale", "tiny", "--seed", "2", "--out", str(tmp_path / "w"), "--quiet"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "world: 1,000 users, 150 audiobooks, 600 podcasts" in out
    assert out.count(" holds") == 7
    assert json.loads((tmp_path / "w" / "stats.json").read_text())["all_hold"]

    assert main(["validate", str(tmp_path / "w")]) == 0
    assert "matches the data contract" in capsys.readouterr().out


def test_errors_are_one_line_and_nonzero(tmp_path, capsys):
    (tmp_path / "cfg.json").write_text('{"n_users": -3}')
    rc = main(
        [
            "generate",
            "--scale",
            "tiny",
            "--out",
            str(tmp_path / "w"),
            "--config",
            str(tmp_path / "cfg.json"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("audiorec: error: invalid WorldConfig: n_users:") and err.count("\n") == 1
    assert main(["validate", str(tmp_path / "missing")]) == 1
    assert "dataset directory does not exist" in capsys.readouterr().err


def test_console_script_is_installed_and_help_is_fast():
    exe = Path(sys.executable).parent / "audiorec"
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "generate" in res.stdout and "demo" in res.stdout


def test_hgnn_rejects_unknown_relation(tiny_world, tmp_path, capsys):
    rc = main(
        [
            "hgnn",
            "--data",
            str(tiny_world),
            "--text",
            "t.parquet",
            "--out",
            str(tmp_path / "h"),
            "--relations",
            "AA,XX",
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "graph relations ['XX'] are not pairs of this dataset's item types (relations: AA, "
    "AP, PP)" in err and len(err.strip().splitlines()) == 1


def test_embed_text_then_features_from_the_command_line(tiny_world, tmp_path, capsys):
    """The CLI path of the feature step: text embeddings (cached on the second run), then
    jobs + apply + materialize, with the text table standing in for item embeddings."""
    text = tmp_path / "text.parquet"
    cache = tmp_path / "cache.parquet"
    args = [
        "embed-text",
        "--data",
        str(tiny_world),
        "--out",
        str(text),
        "--cache",
        str(cache),
        "--quiet",
    ]
    assert main(args) == 0
    assert "750 items (750 encoded, 0 from cache; dim 384)" in capsys.readouterr().out
    assert main(args) == 0
    assert "(0 encoded, 750 from cache" in capsys.readouterr().out
    rc = main(
        [
            "features",
            "--data",
            str(tiny_world),
            "--workdir",
            str(tmp_path / "wd"),
            "--hgnn",
            str(text),
            "--text",
            str(text),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "(full rebuild)" in out and "materialized" in out
    assert (
        main(
            [
                "features",
                "--data",
                str(tiny_world),
                "--workdir",
                str(tmp_path / "wd"),
                "--hgnn",
                str(text),
                "--text",
                str(text),
            ]
        )
        == 0
    )
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["pipeline", "serve", "features", "ui"])
@pytest.mark.parametrize("flag", [["--redis-cluster"], ["--redis", "localhost:6390"]])
def test_a_redis_flag_without_online_redis_is_an_error_not_silence(command, flag, tmp_path, capsys):
    needed = {
        "pipeline": ["--data", str(tmp_path), "--workdir", str(tmp_path)],
        "serve": ["--workdir", str(tmp_path)],
        "ui": ["--workdir", str(tmp_path)],
        "features": ["--data", str(tmp_path), "--workdir", str(tmp_path), "--hgnn", "h",
                     "--text", "t"],
    }[command]  # fmt: skip
    assert main([command, *needed, *flag]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"audiorec: error: {flag[0]} needs --online redis (the online store is SQLite otherwise)"
    ]


def test_ui_refuses_an_open_address_without_a_token_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AUDIOREC_UI_TOKEN", raising=False)
    assert main(["ui", "--workdir", str(tmp_path), "--host", "0.0.0.0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to serve the inspector on 0.0.0.0" in err[0]
    assert main(["ui", "--workdir", str(tmp_path / "none")]) == 1  # nothing published
    assert "no published artifact" in capsys.readouterr().err
