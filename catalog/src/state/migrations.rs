//! The state schema: numbered migrations, the same for both backends, applied in order on
//! open and recorded in `schema_migrations`.

/// Migrations, applied in order; index + 1 is the schema version. Never edit a released one.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: identity and the table registry.
    r#"
    CREATE TABLE users (
        email          VARCHAR PRIMARY KEY,
        name           VARCHAR,
        password_hash  VARCHAR,
        active         BOOLEAN NOT NULL DEFAULT TRUE,
        created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
    );
    CREATE TABLE groups (
        name        VARCHAR PRIMARY KEY,
        created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
    );
    INSERT INTO groups (name) VALUES ('Admin'), ('Everyone');
    CREATE TABLE memberships (
        group_name  VARCHAR NOT NULL,
        email       VARCHAR NOT NULL,
        source      VARCHAR NOT NULL,
        created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (group_name, email)
    );
    CREATE TABLE tables (
        schema_name      VARCHAR NOT NULL,
        table_name       VARCHAR NOT NULL,
        description      VARCHAR,
        current_version  BIGINT,
        created_at       TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (schema_name, table_name)
    );
    CREATE TABLE table_versions (
        schema_name   VARCHAR NOT NULL,
        table_name    VARCHAR NOT NULL,
        version       BIGINT NOT NULL,
        location      VARCHAR NOT NULL,
        row_count     BIGINT NOT NULL,
        byte_count    BIGINT NOT NULL,
        committed_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (schema_name, table_name, version)
    );
    "#,
    // 2: access: grants, personal access tokens, the audit log.
    r#"
    CREATE SEQUENCE grant_ids START 1;
    CREATE TABLE grants (
        id            BIGINT PRIMARY KEY DEFAULT nextval('grant_ids'),
        group_name    VARCHAR NOT NULL,
        schema_name   VARCHAR NOT NULL,
        table_name    VARCHAR NOT NULL,   -- '*' for every table of the schema
        row_filter    VARCHAR,
        column_masks  VARCHAR NOT NULL,   -- JSON object: column -> SQL expression, or null to hide
        created_by    VARCHAR NOT NULL,
        created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
    );
    CREATE TABLE tokens (
        id            VARCHAR PRIMARY KEY,
        email         VARCHAR NOT NULL,
        name          VARCHAR NOT NULL,
        prefix        VARCHAR NOT NULL,
        hash          VARCHAR NOT NULL UNIQUE,
        created_at    BIGINT NOT NULL,     -- seconds since the epoch, like the other token times
        expires_at    BIGINT,
        last_used_at  BIGINT,
        revoked_at    BIGINT
    );
    CREATE SEQUENCE audit_ids START 1;
    CREATE TABLE audit (
        id           BIGINT PRIMARY KEY DEFAULT nextval('audit_ids'),
        occurred_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
        actor        VARCHAR NOT NULL,
        action       VARCHAR NOT NULL,
        target       VARCHAR,
        detail       VARCHAR,
        outcome      VARCHAR NOT NULL,
        statement    VARCHAR,
        tables       VARCHAR,
        row_count    BIGINT,
        byte_count   BIGINT,
        duration_ms  BIGINT
    );
    "#,
    // 3: OAuth client credentials for service accounts.
    r#"
    CREATE TABLE client_credentials (
        client_id    VARCHAR PRIMARY KEY,
        email        VARCHAR NOT NULL,     -- the user the client acts as
        name         VARCHAR NOT NULL,
        secret_hash  VARCHAR NOT NULL,
        created_at   BIGINT NOT NULL,
        revoked_at   BIGINT
    );
    "#,
    // 4: table definitions (connector, options, schedule), sync runs, version profiles.
    r#"
    CREATE TABLE table_definitions (
        schema_name  VARCHAR NOT NULL,
        table_name   VARCHAR NOT NULL,
        definition   VARCHAR NOT NULL,   -- JSON; secrets only as ${ENV} references
        origin       VARCHAR NOT NULL,   -- 'config' (quiver.yaml) or 'api'
        created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (schema_name, table_name)
    );
    CREATE SEQUENCE sync_run_ids START 1;
    CREATE TABLE sync_runs (
        id           BIGINT PRIMARY KEY DEFAULT nextval('sync_run_ids'),
        schema_name  VARCHAR NOT NULL,
        table_name   VARCHAR NOT NULL,
        trigger      VARCHAR NOT NULL,   -- 'schedule', 'manual' or 'retry'
        actor        VARCHAR,
        started_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
        ended_at     TIMESTAMP,
        status       VARCHAR NOT NULL,   -- 'running', 'succeeded', 'failed', 'interrupted'
        row_count    BIGINT,
        byte_count   BIGINT,
        version      BIGINT,
        error        VARCHAR
    );
    CREATE TABLE version_details (
        schema_name  VARCHAR NOT NULL,
        table_name   VARCHAR NOT NULL,
        version      BIGINT NOT NULL,
        watermark    VARCHAR,            -- incremental tables: largest watermark loaded
        profile      VARCHAR,            -- JSON: per-column statistics
        PRIMARY KEY (schema_name, table_name, version)
    );
    "#,
    // 5: sharded versions (a version listing its files, one per shard), webhook deliveries.
    r#"
    CREATE TABLE version_files (
        schema_name  VARCHAR NOT NULL,
        table_name   VARCHAR NOT NULL,
        version      BIGINT NOT NULL,
        shard        VARCHAR NOT NULL,   -- e.g. '2026-03', a month of Jira issues
        url          VARCHAR NOT NULL,   -- one parquet file; shared by versions until replaced
        row_count    BIGINT NOT NULL,
        byte_count   BIGINT NOT NULL,
        PRIMARY KEY (schema_name, table_name, version, shard)
    );
    CREATE TABLE webhook_deliveries (
        source           VARCHAR NOT NULL,   -- 'jira'
        delivery_id      VARCHAR NOT NULL,
        received_at      TIMESTAMP NOT NULL DEFAULT current_timestamp,
        event            VARCHAR NOT NULL,
        subject          VARCHAR NOT NULL,   -- what the event is about, e.g. an issue key
        detail           VARCHAR NOT NULL,   -- JSON the processor needs from the payload
        payload          VARCHAR NOT NULL,   -- object-store key of the raw body
        status           VARCHAR NOT NULL,   -- 'pending' or 'done'
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
        error            VARCHAR,
        processed_at     TIMESTAMP,
        PRIMARY KEY (source, delivery_id)
    );
    "#,
    // 6: ended sessions (signed out before they expire), and what each PAT was made with.
    r#"
    CREATE TABLE ended_sessions (
        jti         VARCHAR PRIMARY KEY,   -- the bearer token's unique id
        expires_at  BIGINT NOT NULL        -- when the token would have expired anyway
    );
    ALTER TABLE tokens ADD COLUMN origin VARCHAR;   -- 'pat:<id>' or 'client:<id>'; ends with it
    "#,
    // 7: a counter every change of what principals may see bumps, so other processes (the
    // replicas of a cluster, `quiver admin`) can tell their caches are stale.
    r#"
    CREATE TABLE state_generation (
        id          INTEGER PRIMARY KEY,   -- always 1
        generation  BIGINT NOT NULL
    );
    INSERT INTO state_generation VALUES (1, 1);
    "#,
    // 8: leases: which replica runs the cluster's background work.
    r#"
    CREATE TABLE leases (
        name        VARCHAR PRIMARY KEY,   -- 'background'
        holder      VARCHAR NOT NULL,      -- the replica's id
        expires_at  BIGINT NOT NULL        -- milliseconds since the epoch
    );
    "#,
    // 9: the cluster: replicas alive by their heartbeats, the work each one runs (so
    // per-user limits and cancellation hold across replicas), sign-in failures. (A run's
    // replica has a table of its own, and there are no indexes: DuckDB could not replay a
    // WAL holding this migration's first form, with `ALTER TABLE sync_runs` and two
    // indexes, after a crash.)
    r#"
    CREATE TABLE replicas (
        id          VARCHAR PRIMARY KEY,   -- random, per process
        advertise   VARCHAR,               -- grpc://host:port clients reach it at
        started_at  BIGINT NOT NULL,       -- milliseconds since the epoch
        seen_at     BIGINT NOT NULL        -- its last heartbeat, milliseconds
    );
    CREATE TABLE sync_run_replicas (
        run         BIGINT PRIMARY KEY,    -- sync_runs.id
        replica     VARCHAR NOT NULL       -- the replica running it
    );
    CREATE TABLE running_work (
        id          VARCHAR PRIMARY KEY,   -- random, per result stream
        replica     VARCHAR NOT NULL,      -- the replica streaming it
        principal   VARCHAR NOT NULL,      -- the user's e-mail
        query_id    VARCHAR NOT NULL,      -- the query streamed (for cancellation)
        cancel      BOOLEAN NOT NULL DEFAULT false
    );
    CREATE TABLE sign_in_failures (
        key         VARCHAR NOT NULL,      -- 'account:<email>' or 'address:<ip>'
        failed_at   BIGINT NOT NULL        -- milliseconds since the epoch
    );
    "#,
    // 10: prepared statements holding bound parameters, per replica, so that
    // `query.max_prepared_per_user` holds across replicas.
    r#"
    CREATE TABLE bound_statements (
        id          VARCHAR PRIMARY KEY,   -- the prepared statement's id
        replica     VARCHAR NOT NULL,      -- the replica holding its parameters
        principal   VARCHAR NOT NULL       -- the user's e-mail
    );
    "#,
    // 11: what a grant allows: 'read' or 'write' (NULL, for grants made before: read).
    r#"
    ALTER TABLE grants ADD COLUMN privilege VARCHAR;
    "#,
    // 12: tables users wrote (not kept by syncs), and each user's personal schema.
    r#"
    CREATE TABLE written_tables (
        schema_name VARCHAR NOT NULL,
        table_name  VARCHAR NOT NULL,
        created_by  VARCHAR NOT NULL,      -- the e-mail of the user who created it
        PRIMARY KEY (schema_name, table_name)
    );
    CREATE TABLE personal_schemas (
        schema_name VARCHAR PRIMARY KEY,   -- home_<local part>[_n], the user's for good
        email       VARCHAR NOT NULL UNIQUE
    );
    "#,
    // 13: remarks users put on the columns of the tables they wrote (`COMMENT ON COLUMN`),
    // a JSON object of column name to remark (synced tables' come from their definitions).
    r#"
    ALTER TABLE written_tables ADD COLUMN remarks VARCHAR;
    "#,
    // 14: governance: tags on schemas, tables and columns ('' for the parts a tag is not
    // on), policies bound to tags (JSON, as the API takes them), and server secrets (the
    // key of keyed masks).
    r#"
    CREATE TABLE tags (
        schema_name VARCHAR NOT NULL,
        table_name  VARCHAR NOT NULL,      -- '' for a schema's own tag
        column_name VARCHAR NOT NULL,      -- '' for a table's (or schema's) own tag
        tag         VARCHAR NOT NULL,
        PRIMARY KEY (schema_name, table_name, column_name, tag)
    );
    CREATE TABLE policies (
        name        VARCHAR PRIMARY KEY,
        definition  VARCHAR NOT NULL
    );
    CREATE TABLE server_keys (
        name        VARCHAR PRIMARY KEY,   -- 'mask'
        value       VARCHAR NOT NULL
    );
    "#,
    // 15: user attributes (`user_attribute('region')` in conditions): a JSON string or
    // list of strings per user and name; where a policy was defined; what each statement read
    // of each table (the access history).
    r#"
    CREATE TABLE user_attributes (
        email       VARCHAR NOT NULL,
        name        VARCHAR NOT NULL,
        value       VARCHAR NOT NULL,
        PRIMARY KEY (email, name)
    );
    ALTER TABLE policies ADD COLUMN origin VARCHAR;   -- 'config' for the file's, else NULL
    ALTER TABLE audit ADD COLUMN access VARCHAR;       -- a statement's reads, JSON
    "#,
];
