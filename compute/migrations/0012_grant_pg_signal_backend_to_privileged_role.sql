-- Neon migration 12.
GRANT pg_signal_backend TO {privileged_role_name} WITH ADMIN OPTION;
