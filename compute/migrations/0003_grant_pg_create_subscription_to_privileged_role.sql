-- PostgreSQL 16+ only: pg_create_subscription does not exist before (Neon migration 3).
DO $migration$
BEGIN
    IF (SELECT setting::int4 FROM pg_catalog.pg_settings WHERE name = 'server_version_num')
        >= 160000
    THEN
        EXECUTE pg_catalog.format(
            'GRANT pg_create_subscription TO %I', {privileged_role_literal}
        );
    END IF;
END
$migration$;
