-- Who we are and what the server preloads. Our sessions run with search_path = '',
-- so unqualified functions and operators resolve in pg_catalog only; relations are
-- still qualified because pg_temp is searched first for them.
SELECT current_user::text AS superuser,
       pg_catalog.current_database()::text AS dbname,
       pg_catalog.current_setting('server_version_num')::int AS server_version,
       pg_catalog.current_setting('shared_preload_libraries') AS preloaded,
       ARRAY(SELECT e.extname::text FROM pg_catalog.pg_extension e) AS extensions
