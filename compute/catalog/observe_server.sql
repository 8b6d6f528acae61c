-- Who we are, what the server preloads, and the maintenance database's system objects.
-- Our sessions run with search_path = '', so unqualified functions and operators
-- resolve in pg_catalog only; relations are still qualified because pg_temp is
-- searched first for them.
SELECT current_user::text AS superuser,
       pg_catalog.current_database()::text AS dbname,
       pg_catalog.current_setting('server_version_num')::int AS server_version,
       pg_catalog.current_setting('shared_preload_libraries') AS preloaded,
       ARRAY(SELECT e.extname::text FROM pg_catalog.pg_extension e) AS extensions,
       EXISTS (SELECT FROM pg_catalog.pg_namespace n
                WHERE n.nspname = %(neon_schema)s) AS neon_schema,
       pg_catalog.to_regclass(%(health_check)s) IS NOT NULL AS health_check,
       pg_catalog.to_regclass(%(marker)s) IS NOT NULL AS marker,
       -- The neon extension: available (default version), installed (version, schema).
       (SELECT a.default_version::text FROM pg_catalog.pg_available_extensions a
         WHERE a.name = %(neon_extension)s) AS neon_default_version,
       (SELECT e.extversion::text FROM pg_catalog.pg_extension e
         WHERE e.extname = %(neon_extension)s) AS neon_installed_version,
       (SELECT n.nspname::text FROM pg_catalog.pg_extension e
          JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname = %(neon_extension)s) AS neon_extension_schema
