-- Role oid -> databases holding objects it owns or privileges it holds (0: shared objects).
SELECT s.refobjid::int8 AS role_oid, array_agg(DISTINCT s.dbid::int8) AS databases
FROM pg_catalog.pg_shdepend s
WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass
GROUP BY s.refobjid
