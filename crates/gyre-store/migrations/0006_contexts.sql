-- Contexts: named sets of environment variables an organization's jobs ask for with
-- `context:`. `owner_slug` is the organization (`gh/acme`). Values are sealed by
-- gyre-secrets (never plaintext). Same portability rules as 0001.
CREATE TABLE contexts (
    id BIGINT PRIMARY KEY,
    owner_slug TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (owner_slug, name)
);
INSERT INTO id_counters (name, last_id) VALUES ('contexts', 0);

CREATE TABLE context_env_vars (
    context_id BIGINT NOT NULL REFERENCES contexts (id),
    name TEXT NOT NULL,
    value BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (context_id, name)
);
