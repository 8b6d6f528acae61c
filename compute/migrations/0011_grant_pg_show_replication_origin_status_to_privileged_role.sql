-- Neon migration 11.
GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() TO {privileged_role_name};
