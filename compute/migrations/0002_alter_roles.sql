-- Neon's repair for incident INC-110 (migration 2): every member of the privileged role
-- inherits its privileges, and no other role (outside pg_*) keeps BYPASSRLS.
DO $migration$
DECLARE
    r text;
BEGIN
    FOR r IN
        SELECT rolname FROM pg_catalog.pg_roles
        WHERE pg_catalog.pg_has_role(rolname, {privileged_role_literal}, 'member')
    LOOP
        RAISE NOTICE 'ALTER ROLE % INHERIT', pg_catalog.quote_ident(r);
        EXECUTE pg_catalog.format('ALTER ROLE %I INHERIT', r);
    END LOOP;

    FOR r IN
        SELECT rolname FROM pg_catalog.pg_roles
        WHERE NOT pg_catalog.pg_has_role(rolname, {privileged_role_literal}, 'member')
          AND NOT pg_catalog.starts_with(rolname, 'pg_')
    LOOP
        RAISE NOTICE 'ALTER ROLE % NOBYPASSRLS', pg_catalog.quote_ident(r);
        EXECUTE pg_catalog.format('ALTER ROLE %I NOBYPASSRLS', r);
    END LOOP;
END
$migration$;
