-- PostgreSQL 16+ only, as in Neon (migration 10).
DO $migration$
BEGIN
    IF (SELECT setting::int4 FROM pg_catalog.pg_settings WHERE name = 'server_version_num')
        >= 160000
    THEN
        EXECUTE pg_catalog.format(
            'GRANT EXECUTE ON FUNCTION pg_catalog.pg_export_snapshot() TO %I',
            {privileged_role_literal}
        );
        EXECUTE pg_catalog.format(
            'GRANT EXECUTE ON FUNCTION pg_catalog.pg_log_standby_snapshot() TO %I',
            {privileged_role_literal}
        );
    END IF;
END
$migration$;
