-- gyre's first schema. Portable SQL: the same text runs on SQLite and PostgreSQL ≥ 12.
-- Rules that keep it portable:
--   * integers are BIGINT, times are BIGINT milliseconds since the Unix epoch;
--   * JSON is TEXT (the store reads and writes it with serde_json);
--   * bytes are BYTEA (SQLite stores a blob in any column);
--   * row ids come from `id_counters` (no SERIAL / AUTOINCREMENT / IDENTITY, which differ).

-- The last id handed out per table. `UPDATE … SET last_id = last_id + 1 … RETURNING last_id`
-- is atomic on both engines.
CREATE TABLE id_counters (
    name TEXT PRIMARY KEY,
    last_id BIGINT NOT NULL
);
INSERT INTO id_counters (name, last_id) VALUES
    ('projects', 0), ('pipelines', 0), ('workflows', 0), ('agents', 0);

CREATE TABLE projects (
    id BIGINT PRIMARY KEY,
    -- `gh/org/repo`
    slug TEXT NOT NULL UNIQUE,
    repo_url TEXT NOT NULL,
    default_branch TEXT NOT NULL,
    webhook_secret TEXT,
    -- JSON object
    settings TEXT NOT NULL,
    -- the last pipeline / job number handed out in this project
    last_pipeline_number BIGINT NOT NULL,
    last_job_number BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE pipelines (
    id BIGINT PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects (id),
    number BIGINT NOT NULL,
    -- webhook, api, schedule, …
    trigger_kind TEXT NOT NULL,
    -- who or what triggered it (login, delivery id, schedule name)
    trigger_actor TEXT NOT NULL,
    branch TEXT,
    tag TEXT,
    revision TEXT NOT NULL,
    -- PipelineStatus wire string
    state TEXT NOT NULL,
    -- JSON array of {"type", "message"}
    errors TEXT NOT NULL,
    -- the config source as fetched
    config TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (project_id, number)
);

CREATE TABLE workflows (
    id BIGINT PRIMARY KEY,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    name TEXT NOT NULL,
    -- WorkflowStatus wire string
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    stopped_at BIGINT
);
CREATE INDEX workflows_by_pipeline ON workflows (pipeline_id);

-- gyre-core's JobId is the job's index in its workflow.
CREATE TABLE jobs (
    workflow_id BIGINT NOT NULL REFERENCES workflows (id),
    job_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    -- JobStatus wire string
    status TEXT NOT NULL,
    -- per project; NULL for approval jobs
    number BIGINT,
    started_at BIGINT,
    stopped_at BIGINT,
    PRIMARY KEY (workflow_id, job_id)
);

CREATE TABLE agents (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    -- active, draining, down
    status TEXT NOT NULL,
    registered_at BIGINT NOT NULL,
    last_heartbeat BIGINT NOT NULL
);

-- The queue. gyre-core's TaskId counts the tasks of a workflow.
CREATE TABLE tasks (
    workflow_id BIGINT NOT NULL,
    task_id BIGINT NOT NULL,
    job_id BIGINT NOT NULL,
    node_index BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    -- queued, running, or the final JobStatus wire string
    status TEXT NOT NULL,
    resource_class TEXT NOT NULL,
    -- JSON (the task spec)
    payload TEXT NOT NULL,
    queued_at BIGINT NOT NULL,
    lease_owner BIGINT REFERENCES agents (id),
    lease_expires_at BIGINT,
    started_at BIGINT,
    finished_at BIGINT,
    PRIMARY KEY (workflow_id, task_id),
    FOREIGN KEY (workflow_id, job_id) REFERENCES jobs (workflow_id, job_id)
);
CREATE INDEX tasks_queue ON tasks (status, resource_class, queued_at);
CREATE INDEX tasks_leases ON tasks (status, lease_expires_at);

-- Output of running tasks; (task, seq) is unique so a retried append is a no-op.
CREATE TABLE log_chunks (
    workflow_id BIGINT NOT NULL,
    task_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    step BIGINT NOT NULL,
    -- stdout or stderr
    stream TEXT NOT NULL,
    at BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (workflow_id, task_id, seq),
    FOREIGN KEY (workflow_id, task_id) REFERENCES tasks (workflow_id, task_id)
);

-- Webhook deliveries seen (GitHub's X-GitHub-Delivery); the key dedupes them.
CREATE TABLE webhook_deliveries (
    delivery_id TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL
);
