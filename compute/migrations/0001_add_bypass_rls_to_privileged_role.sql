-- The privileged role may bypass row-level security (Neon migration 1).
ALTER ROLE {privileged_role_name} BYPASSRLS;
