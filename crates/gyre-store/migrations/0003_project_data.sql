-- Per-project data beyond the projects row: pull requests seen through webhooks and
-- environment variables. Same portability rules as 0001 (booleans are BIGINT 0/1).

-- Pull requests, from GitHub `pull_request` deliveries: pushes to an open PR's branch
-- carry its URL (`CIRCLE_PULL_REQUEST`); forked PRs are built as `pull/<number>`.
CREATE TABLE pull_requests (
    project_id BIGINT NOT NULL REFERENCES projects (id),
    number BIGINT NOT NULL,
    url TEXT NOT NULL,
    -- the head branch name in the head repository
    head_branch TEXT NOT NULL,
    head_sha TEXT NOT NULL,
    -- `owner/repo` of the head repository; empty when the fork was deleted
    head_repo TEXT NOT NULL,
    fork BIGINT NOT NULL,
    is_open BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, number)
);
CREATE INDEX pull_requests_by_branch ON pull_requests (project_id, head_branch);

-- Project environment variables; `value` is sealed by gyre-secrets (never plaintext).
CREATE TABLE project_env_vars (
    project_id BIGINT NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    value BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, name)
);
