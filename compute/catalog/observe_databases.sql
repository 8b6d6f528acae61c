-- One row per database. privileged_grant: the privileged role holds CREATE, CONNECT and
-- TEMPORARY. default_privileges: pg_shdepend records the privileged role as grantee of
-- default ACLs (ours: tables and sequences in schema public) in that database, which
-- tells a database whose schema work is done without connecting to it.
-- web_access_create: likewise, pg_shdepend records web_access in the ACL of namespace
-- 2200, the oid initdb gives schema public and database copies keep. It cannot tell
-- CREATE from other privileges; a visit reads the ACL itself.
SELECT d.oid::int8 AS oid, d.datname::text AS name, o.rolname::text AS owner,
       d.datconnlimit AS connlimit, d.datallowconn AS allow_connections,
       d.datistemplate AS is_template,
       (SELECT count(DISTINCT x.privilege_type) FROM aclexplode(d.datacl) x
         WHERE x.grantee = p.oid AND x.privilege_type IN ('CREATE', 'CONNECT', 'TEMPORARY')
       ) = 3 AS privileged_grant,
       (SELECT count(DISTINCT s.objid) FROM pg_catalog.pg_shdepend s
         WHERE s.dbid = d.oid AND s.classid = 'pg_catalog.pg_default_acl'::regclass
           AND s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = p.oid
           AND s.deptype = 'a'
       ) >= 2 AS default_privileges,
       ARRAY(SELECT sub.subname::text FROM pg_catalog.pg_subscription sub
              WHERE sub.subdbid = d.oid ORDER BY sub.subname) AS subscriptions,
       EXISTS (SELECT FROM pg_catalog.pg_shdepend s
                WHERE s.dbid = d.oid AND s.classid = 'pg_catalog.pg_namespace'::regclass
                  AND s.objid = 2200 AND s.refclassid = 'pg_catalog.pg_authid'::regclass
                  AND s.refobjid = w.oid AND s.deptype = 'a') AS web_access_create
FROM pg_catalog.pg_database d
JOIN pg_catalog.pg_authid o ON o.oid = d.datdba
LEFT JOIN pg_catalog.pg_authid p ON p.rolname = %(privileged_role)s
LEFT JOIN pg_catalog.pg_authid w ON w.rolname = %(web_access)s
