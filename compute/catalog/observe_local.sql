-- Inside one database: the owner of schema public ('' when it is missing), and whether
-- the role web_access holds CREATE on it (its ACL, granted by anyone).
SELECT coalesce(
           (SELECT r.rolname::text FROM pg_catalog.pg_namespace n
              JOIN pg_catalog.pg_authid r ON r.oid = n.nspowner
             WHERE n.nspname = 'public'),
           '') AS public_owner,
       EXISTS (SELECT FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) x
                 JOIN pg_catalog.pg_authid w ON w.oid = x.grantee
                WHERE n.nspname = 'public' AND w.rolname = %(web_access)s
                  AND x.privilege_type = 'CREATE') AS web_access_create
