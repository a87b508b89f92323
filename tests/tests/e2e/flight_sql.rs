//! End-to-end: the real `quiver demo` process driven by the arrow-flight Rust Flight SQL
//! client, the way a Rust application or a BI bridge would use it.

use std::time::Duration;

use arrow::array::{AsArray, Int64Array};
use arrow::datatypes::{DataType, Int64Type};
use arrow::record_batch::RecordBatch;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{
    Any, CommandGetDbSchemas, CommandGetTables, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, Ticket};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use quiver_e2e::{ServerOptions, TestServer, fetch, query, row_count};
use tonic::Code;

fn int64(batches: &[RecordBatch], column: usize) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column(column)
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

#[tokio::test]
async fn demo_tables_answer_queries_with_the_tpch_row_counts() -> anyhow::Result<()> {
    let server = TestServer::spawn()?;
    let mut client = server.client().await?;
    let expected = [
        ("region", 5),
        ("nation", 25),
        ("supplier", 100),
        ("customer", 1_500),
        ("part", 2_000),
        ("partsupp", 8_000),
        ("orders", 15_000),
    ];
    for (table, rows) in expected {
        let batches = query(&mut client, &format!("SELECT count(*) FROM tpch.{table}")).await?;
        assert_eq!(int64(&batches, 0), vec![rows], "tpch.{table}");
    }
    // lineitem's size varies with the orders; it must match its own join.
    let batches = query(
        &mut client,
        "SELECT count(*) FROM tpch.lineitem l JOIN tpch.orders o ON l.l_orderkey = o.o_orderkey",
    )
    .await?;
    let lineitems = int64(&batches, 0)[0];
    assert!(lineitems > 50_000, "{lineitems} lineitems");

    // A full scan arrives as many batches, not one collected result.
    let batches = query(&mut client, "SELECT * FROM tpch.lineitem").await?;
    assert_eq!(row_count(&batches) as i64, lineitems);
    assert!(batches.len() > 3, "streamed as {} batches", batches.len());
    Ok(())
}

#[tokio::test]
async fn no_call_works_without_valid_credentials() -> anyhow::Result<()> {
    let server = TestServer::spawn()?;
    let mut anonymous = server.anonymous_client().await?;
    let err = anonymous
        .execute("SELECT 1".into(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("authentication required"), "{err}");

    let err = anonymous
        .handshake(quiver_e2e::ADMIN_EMAIL, "wrong password")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("invalid e-mail or password"),
        "{err}"
    );
    let err = anonymous
        .handshake("nobody@example.com", "whatever-password")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("invalid e-mail or password"),
        "{err}"
    );

    let mut forged = server.anonymous_client().await?;
    forged.set_token("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbkBleGFtcGxlLmNvbSJ9.bad".into());
    let err = forged.get_catalogs().await.unwrap_err();
    assert!(
        err.to_string().contains("invalid or expired token"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn metadata_calls_list_catalog_schemas_tables_and_info() -> anyhow::Result<()> {
    let server = TestServer::spawn()?;
    let mut client = server.client().await?;

    let catalogs = {
        let info = client.get_catalogs().await?;
        fetch(&mut client, info).await?
    };
    assert_eq!(catalogs[0].column(0).as_string::<i32>().value(0), "quiver");

    let schemas = {
        let info = client
            .get_db_schemas(CommandGetDbSchemas {
                catalog: None,
                db_schema_filter_pattern: Some("tp%".into()),
            })
            .await?;
        fetch(&mut client, info).await?
    };
    let names: Vec<&str> = schemas[0]
        .column(1)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(names, vec!["tpch"]);

    // No catalog filter, include_schema: every demo table with its Arrow schema.
    let tables = {
        let info = client
            .get_tables(CommandGetTables {
                catalog: None,
                db_schema_filter_pattern: Some("tpch".into()),
                table_name_filter_pattern: None,
                table_types: vec![],
                include_schema: true,
            })
            .await?;
        fetch(&mut client, info).await?
    };
    let batch = &tables[0];
    let names: Vec<&str> = batch
        .column(2)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(
        names,
        vec![
            "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"
        ]
    );
    let schema_bytes = batch.column(4).as_binary::<i32>().value(1);
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(schema_bytes)?;
    assert_eq!(schema.field(0).name(), "l_orderkey");
    assert_eq!(
        schema.field_with_name("l_shipdate")?.data_type(),
        &DataType::Date32
    );

    // A table-name pattern filters.
    let filtered = {
        let info = client
            .get_tables(CommandGetTables {
                catalog: Some("quiver".into()),
                db_schema_filter_pattern: None,
                table_name_filter_pattern: Some("part%".into()),
                table_types: vec!["TABLE".into()],
                include_schema: false,
            })
            .await?;
        fetch(&mut client, info).await?
    };
    assert_eq!(row_count(&filtered), 2);

    let types = {
        let info = client.get_table_types().await?;
        fetch(&mut client, info).await?
    };
    assert_eq!(types[0].column(0).as_string::<i32>().value(0), "TABLE");

    // SqlInfo: server name, read-only, identifier quote char (504).
    let info = {
        let info = client
            .get_sql_info(vec![
                SqlInfo::FlightSqlServerName,
                SqlInfo::FlightSqlServerReadOnly,
                SqlInfo::SqlIdentifierQuoteChar,
            ])
            .await?;
        fetch(&mut client, info).await?
    };
    assert_eq!(row_count(&info), 3);
    let ids: Vec<u32> = info[0]
        .column(0)
        .as_primitive::<arrow::datatypes::UInt32Type>()
        .values()
        .to_vec();
    assert_eq!(ids, vec![0, 3, 504]);

    // JDBC's DatabaseMetaData asks for everything at once.
    let all = {
        let info = client.get_sql_info(vec![]).await?;
        fetch(&mut client, info).await?
    };
    assert!(row_count(&all) > 50, "{} SqlInfo entries", row_count(&all));

    let xdbc = {
        let info = client
            .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
            .await?;
        fetch(&mut client, info).await?
    };
    assert!(row_count(&xdbc) >= 10);

    // Keys: empty results with the right shape, not errors.
    let pk = {
        let info = client
            .get_primary_keys(arrow_flight::sql::CommandGetPrimaryKeys {
                catalog: None,
                db_schema: Some("tpch".into()),
                table: "orders".into(),
            })
            .await?;
        fetch(&mut client, info).await?
    };
    assert_eq!(row_count(&pk), 0);
    let fk = {
        let info = client
            .get_imported_keys(arrow_flight::sql::CommandGetImportedKeys {
                catalog: None,
                db_schema: Some("tpch".into()),
                table: "orders".into(),
            })
            .await?;
        fetch(&mut client, info).await?
    };
    assert_eq!(row_count(&fk), 0);
    Ok(())
}

#[tokio::test]
async fn prepared_statements_bind_question_mark_and_dollar_parameters() -> anyhow::Result<()> {
    let server = TestServer::spawn()?;
    let mut client = server.client().await?;

    for sql in [
        "SELECT n_name FROM tpch.nation WHERE n_nationkey = ?",
        "SELECT n_name FROM tpch.nation WHERE n_nationkey = $1",
    ] {
        let mut prepared = client.prepare(sql.into(), None).await?;
        assert_eq!(prepared.dataset_schema()?.field(0).name(), "n_name");
        assert_eq!(prepared.parameter_schema()?.fields().len(), 1);
        let params = RecordBatch::try_from_iter([(
            "p",
            std::sync::Arc::new(Int64Array::from(vec![7])) as _,
        )])?;
        prepared.set_parameters(params)?;
        let info = prepared.execute().await?;
        let batches = fetch(&mut client, info).await?;
        let names: Vec<&str> = batches
            .iter()
            .flat_map(|b| b.column(0).as_string::<i32>().iter().flatten())
            .collect();
        assert_eq!(names, vec!["GERMANY"], "{sql}");

        // Several parameter rows: one execution per row, results in order.
        let params = RecordBatch::try_from_iter([(
            "p",
            std::sync::Arc::new(Int64Array::from(vec![0, 1, 2])) as _,
        )])?;
        prepared.set_parameters(params)?;
        let batches = fetch(&mut client, prepared.execute().await?).await?;
        let names: Vec<&str> = batches
            .iter()
            .flat_map(|b| b.column(0).as_string::<i32>().iter().flatten())
            .collect();
        assert_eq!(names, vec!["ALGERIA", "ARGENTINA", "BRAZIL"]);
        prepared.close().await?;
    }
    Ok(())
}

/// The JDBC driver runs every statement as create-prepared → GetFlightInfo → DoGet → close,
/// with no DoPut when there are no parameters.
#[tokio::test]
async fn prepared_statements_without_parameters_follow_the_jdbc_pattern() -> anyhow::Result<()> {
    let server = TestServer::spawn()?;
    let mut client = server.client().await?;
    let mut prepared = client
        .prepare(
            "SELECT o_orderstatus, count(*) AS n FROM tpch.orders GROUP BY 1 ORDER BY 1".into(),
            None,
        )
        .await?;
    assert_eq!(prepared.parameter_schema()?.fields().len(), 0);
    let schema = prepared.dataset_schema()?.clone();
    assert_eq!(schema.field(1).name(), "n");
    for _ in 0..2 {
        let batches = fetch(&mut client, prepared.execute().await?).await?;
        assert_eq!(batches[0].schema().fields(), schema.fields());
        let total: i64 = int64(&batches, 1).iter().sum();
        assert_eq!(total, 15_000);
    }
    prepared.close().await?;
    Ok(())
}

#[tokio::test]
async fn the_sql_surface_is_read_only_on_both_paths() -> anyhow::Result<()> {
    let server = TestServer::spawn()?;
    let mut client = server.client().await?;
    let marker = server.data_dir.join("written-by-quiver");
    let statements = [
        "CREATE TABLE t AS SELECT 1".to_string(),
        "CREATE VIEW v AS SELECT 1".to_string(),
        "DROP TABLE tpch.nation".to_string(),
        "INSERT INTO tpch.nation VALUES (99, 'X', 0, 'x')".to_string(),
        "DELETE FROM tpch.nation".to_string(),
        format!("COPY (SELECT 1) TO '{}' STORED AS CSV", marker.display()),
        format!(
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '{}'",
            marker.display()
        ),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "SELECT * FROM '/etc/passwd'".to_string(),
        "SELECT * FROM 'file:///etc/passwd'".to_string(),
    ];
    for sql in &statements {
        let err = client.execute(sql.clone(), None).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("read-only")
                || text.contains("not found")
                || text.contains("not supported"),
            "{sql}: {text}"
        );
        let err = client.prepare(sql.clone(), None).await.unwrap_err();
        assert!(!err.to_string().is_empty(), "{sql}");
    }
    let update = client
        .execute_update("DELETE FROM tpch.nation".into(), None)
        .await;
    assert!(update.unwrap_err().to_string().contains("read-only"));
    assert!(!marker.exists(), "a refused statement wrote a file");
    let batches = query(&mut client, "SELECT count(*) FROM tpch.nation").await?;
    assert_eq!(int64(&batches, 0), vec![25]);
    Ok(())
}

#[tokio::test]
async fn tickets_are_signed_bound_to_the_user_and_have_no_bad_location() -> anyhow::Result<()> {
    let server = TestServer::spawn()?;
    let mut client = server.client().await?;
    let info = client.execute("SELECT 1 AS one".into(), None).await?;
    assert_eq!(info.endpoint.len(), 1);
    for location in &info.endpoint[0].location {
        assert!(
            !location.uri.contains("0.0.0.0")
                && location
                    .uri
                    .rsplit(':')
                    .next()
                    .is_some_and(|p| p.parse::<u16>().is_ok()),
            "unusable location {}",
            location.uri
        );
    }
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let any = Any::decode(&*ticket.ticket)?;
    let mut statement: TicketStatementQuery = any.unpack()?.unwrap();
    let mut handle = statement.statement_handle.to_vec();
    // Flip one character of the payload.
    handle[3] = if handle[3] == b'A' { b'B' } else { b'A' };
    statement.statement_handle = handle.into();
    let err = client
        .do_get(Ticket::new(statement.as_any().encode_to_vec()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tampered"), "{err}");
    // The untouched ticket still works.
    let batches = fetch(&mut client, info).await?;
    assert_eq!(int64(&batches, 0), vec![1]);
    Ok(())
}

#[tokio::test]
async fn large_strings_are_split_below_the_client_message_limit() -> anyhow::Result<()> {
    let server = TestServer::spawn()?;
    let mut client = server.client().await?;
    // 8 000 rows × 10 KB = 80 MB of strings in one engine batch.
    let info = client
        .execute(
            "SELECT o_orderkey, repeat('x', 10000) AS big FROM tpch.orders LIMIT 8000".into(),
            None,
        )
        .await?;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    // Raw FlightData messages, measured as they arrive.
    let mut raw = FlightServiceClient::new(server.channel().await?);
    let mut request = tonic::Request::new(ticket);
    let token = client.token().unwrap().clone();
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let mut stream = raw.do_get(request).await?.into_inner();
    let (mut messages, mut largest, mut total) = (0, 0, 0);
    while let Some(data) = stream.next().await {
        let data = data?;
        let size = data.encoded_len();
        largest = largest.max(size);
        total += size;
        messages += 1;
    }
    assert!(total > 80_000_000, "{total} bytes");
    assert!(largest < 16 * 1024 * 1024, "a message of {largest} bytes");
    assert!(messages > 10, "{messages} messages");
    Ok(())
}

/// A query that runs for a long time on any machine.
const SLOW_QUERY: &str =
    "SELECT count(*) FROM generate_series(1, 1000000000000) WHERE value % 7 = 3";

#[tokio::test]
async fn cancel_flight_info_stops_a_running_query() -> anyhow::Result<()> {
    let server = TestServer::spawn()?;
    let mut client = server.client().await?;
    let info = client.execute(SLOW_QUERY.into(), None).await?;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut reader = server.client().await?;
    let running = tokio::spawn(async move {
        let stream = reader.do_get(ticket).await?;
        stream
            .try_collect::<Vec<_>>()
            .await
            .map_err(anyhow::Error::from)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = CancelFlightInfoRequest { info: Some(info) }.encode_to_vec();
    let mut results = client
        .do_action(Action::new("CancelFlightInfo", body))
        .await?;
    let result = results.next().await.unwrap()?;
    let result = CancelFlightInfoResult::decode(&*result.body)?;
    assert_eq!(result.status, CancelStatus::Cancelled as i32);
    let outcome = tokio::time::timeout(Duration::from_secs(20), running).await??;
    let err = outcome.unwrap_err().to_string();
    assert!(err.contains("cancelled"), "{err}");
    Ok(())
}

#[tokio::test]
async fn runaway_queries_hit_the_configured_timeout() -> anyhow::Result<()> {
    let server = TestServer::spawn_with(ServerOptions {
        config: Some("query:\n  timeout: 1s\n".into()),
        ..Default::default()
    })?;
    let mut client = server.client().await?;
    let started = std::time::Instant::now();
    let err = query(&mut client, SLOW_QUERY).await.unwrap_err();
    let status = match err.downcast_ref::<arrow_flight::error::FlightError>() {
        Some(arrow_flight::error::FlightError::Tonic(status)) => status.clone(),
        _ => panic!("expected a gRPC status, got {err:#}"),
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(status.message().contains("query.timeout"), "{status}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // The server is still healthy afterwards.
    let batches = query(&mut client, "SELECT 1").await?;
    assert_eq!(row_count(&batches), 1);
    Ok(())
}

#[tokio::test]
async fn demo_data_is_reused_and_sigterm_stops_the_server_cleanly() -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let data_dir = temp.path().join("data");
    let options = ServerOptions {
        data_dir: Some(data_dir.clone()),
        ..Default::default()
    };
    let server = TestServer::spawn_with(options.clone())?;
    assert!(server.log().contains("TPC-H table generated"));
    let status = server.terminate()?;
    assert!(status.success(), "exit status {status}");

    let server = TestServer::spawn_with(options)?;
    assert!(
        !server.log().contains("TPC-H table generated"),
        "regenerated:\n{}",
        server.log()
    );
    let mut client = server.client().await?;
    let batches = query(&mut client, "SELECT count(*) FROM tpch.region").await?;
    assert_eq!(int64(&batches, 0), vec![5]);
    // One structured line per query, with the user and the outcome.
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("SELECT count(*) FROM tpch.region") && l.contains("outcome"))
        .unwrap_or_else(|| panic!("no query log line in:\n{log}"));
    assert!(
        line.contains("admin@example.com") && line.contains("rows=1") && line.contains("ok"),
        "{line}"
    );
    Ok(())
}
