-- Inside one database: the owner of schema public ('' when it is missing).
SELECT coalesce(
    (SELECT r.rolname::text FROM pg_catalog.pg_namespace n
       JOIN pg_catalog.pg_authid r ON r.oid = n.nspowner
      WHERE n.nspname = 'public'),
    '')
