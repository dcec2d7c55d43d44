#!/usr/bin/env bash
# Runs once, from the postgres image's /docker-entrypoint-initdb.d/, on an empty data volume:
# one login role and one database each for MLflow and Prefect. The passwords come from the
# container's environment (compose passes them from .env); psql quotes them (:'var'), so any
# character is safe.
set -euo pipefail

create() {  # create <name> <password>
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
       -v name="$1" -v password="$2" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
SQL
}

create mlflow "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set}"
create prefect "${PREFECT_DB_PASSWORD:?PREFECT_DB_PASSWORD is not set}"
