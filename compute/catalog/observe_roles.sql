SELECT a.oid::int8 AS oid, a.rolname::text AS name, a.rolsuper AS superuser,
       a.rolinherit AS inherit, a.rolcreaterole AS createrole, a.rolcreatedb AS createdb,
       a.rolcanlogin AS login, a.rolreplication AS replication, a.rolbypassrls AS bypassrls,
       a.rolconnlimit AS connlimit, a.rolvaliduntil::text AS valid_until,
       a.rolpassword AS password
FROM pg_catalog.pg_authid a
