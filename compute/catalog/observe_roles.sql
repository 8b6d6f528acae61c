SELECT a.oid::int8, a.rolname::text, a.rolsuper, a.rolinherit, a.rolcreaterole, a.rolcreatedb,
       a.rolcanlogin, a.rolreplication, a.rolbypassrls, a.rolconnlimit,
       a.rolvaliduntil::text, a.rolpassword
FROM pg_catalog.pg_authid a
