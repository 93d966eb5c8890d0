"""Feature jobs (DuckDB SQL) that write the Feast sources, and the Feast store around them.

Flow: dataset (contract) + item embeddings -> ``run_feature_jobs`` -> parquet sources under
``<workdir>/features/`` -> ``apply_repo`` / ``materialize`` -> offline (DuckDB) and online
(SQLite or Redis) stores -> ``user_training_features`` (historical) / online reads.
"""
