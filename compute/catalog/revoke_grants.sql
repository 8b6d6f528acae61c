-- Before DROP OWNED BY the role named by the setting compute_ctl.deleting_role: revoke
-- the privileges on relations (and their columns) that it holds from a grantor other
-- than the owner. DROP OWNED revokes only as the owner, even for a superuser, so a
-- grant made by someone holding a grant option (and what the role re-granted from it)
-- would survive and block DROP ROLE (Neon #10299, #10964). A REVOKE names its grantor
-- by running as it; CASCADE also takes what the role passed on.
DO $revoke$
DECLARE
    target pg_catalog.oid := (
        SELECT r.oid FROM pg_catalog.pg_authid r
        WHERE r.rolname OPERATOR(pg_catalog.=)
              pg_catalog.current_setting('compute_ctl.deleting_role'));
    item record;
BEGIN
    FOR item IN
        SELECT DISTINCT x.grantor::pg_catalog.regrole AS grantor,
               c.oid::pg_catalog.regclass AS rel, NULL::pg_catalog.name AS col
        FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) x
        WHERE x.grantee OPERATOR(pg_catalog.=) target
          AND x.grantor OPERATOR(pg_catalog.<>) c.relowner
        UNION
        SELECT DISTINCT x.grantor::pg_catalog.regrole, c.oid::pg_catalog.regclass, a.attname
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid,
             pg_catalog.aclexplode(a.attacl) x
        WHERE x.grantee OPERATOR(pg_catalog.=) target
          AND x.grantor OPERATOR(pg_catalog.<>) c.relowner
        ORDER BY 1, 2, 3 NULLS FIRST
    LOOP
        EXECUTE pg_catalog.format('SET LOCAL ROLE %s', item.grantor);
        IF item.col IS NULL THEN
            EXECUTE pg_catalog.format('REVOKE ALL PRIVILEGES ON TABLE %s FROM %s CASCADE',
                                      item.rel, target::pg_catalog.regrole);
        ELSE
            EXECUTE pg_catalog.format('REVOKE ALL PRIVILEGES (%I) ON TABLE %s FROM %s CASCADE',
                                      item.col, item.rel, target::pg_catalog.regrole);
        END IF;
    END LOOP;
    -- Back to the session's (superuser) role for the rest of the transaction.
    SET LOCAL ROLE NONE;
END
$revoke$
