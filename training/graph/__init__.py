"""The co-listening item graph: built in DuckDB SQL, held as per-relation CSR arrays."""
