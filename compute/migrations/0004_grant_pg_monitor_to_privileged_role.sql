-- Neon migration 4.
GRANT pg_monitor TO {privileged_role_name} WITH ADMIN OPTION;
