-- The web UI's sign-in sessions. Only a hash of the session id (the cookie) is kept; the
-- CSRF token is checked on every form the UI posts. Same portability rules as 0001.
CREATE TABLE ui_sessions (
    id_hash TEXT PRIMARY KEY,
    login TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ui_sessions_by_expiry ON ui_sessions (expires_at);

-- Project pages filter pipelines by branch, newest first.
CREATE INDEX pipelines_by_branch ON pipelines (project_id, branch, number);

-- Local users who sign in to the web UI with a password (full user management comes
-- later). `password_hash` is `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`.
CREATE TABLE ui_users (
    login TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
