-- Deactivation instead of deletion: users and service providers stay referenced by the
-- timeline and the audit log, so they are switched off, never removed.
ALTER TABLE users ADD COLUMN active INTEGER NOT NULL DEFAULT 1;
ALTER TABLE service_providers ADD COLUMN active INTEGER NOT NULL DEFAULT 1;
