//! Test support: start the real `quiver` binary on free ports with a temporary data
//! directory, wait until it listens, hand out real Flight SQL clients, and kill it on drop.
//!
//! The binary is `$QUIVER_BIN`, else `quiver` next to the test executable's `deps/` folder
//! (what `cargo build --release -p quiver` produces in the same target directory).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

/// Demo scale the tests use: small enough to generate in a second, big enough for several
/// batches per table.
pub const TEST_SCALE: &str = "0.01";
/// Admin credentials the test servers are started with.
pub const ADMIN_EMAIL: &str = "admin@example.com";
/// Password of [`ADMIN_EMAIL`].
pub const ADMIN_PASSWORD: &str = "test-admin-password";

/// The `quiver` binary under test.
pub fn quiver_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("QUIVER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let bin = dir.join(format!("quiver{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build --release -p quiver` (or set QUIVER_BIN)",
        bin.display()
    );
    bin
}

/// A running `quiver` process.
pub struct TestServer {
    child: Child,
    /// `host:port` of the Flight SQL listener.
    pub flight_addr: String,
    /// `host:port` of the HTTP listener.
    pub http_addr: String,
    /// The data directory (removed on drop unless kept by the caller).
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Extra YAML configuration, written to a file and passed with `--config`.
    pub config: Option<String>,
    /// Reuse this data directory instead of a fresh temporary one.
    pub data_dir: Option<PathBuf>,
    /// Run `serve` instead of `demo`.
    pub no_demo: bool,
}

impl TestServer {
    /// `quiver demo --scale 0.01` on free ports with a fresh data directory.
    pub fn spawn() -> anyhow::Result<Self> {
        Self::spawn_with(ServerOptions::default())
    }

    /// Starts a server with `options` and waits until both listeners are up.
    pub fn spawn_with(options: ServerOptions) -> anyhow::Result<Self> {
        let (temp, data_dir) = match options.data_dir {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::tempdir()?;
                let dir = temp.path().join("data");
                (Some(temp), dir)
            }
        };
        std::fs::create_dir_all(&data_dir)?;
        let mut command = Command::new(quiver_bin());
        if options.no_demo {
            command.arg("serve");
        } else {
            command.args(["demo", "--scale", TEST_SCALE]);
        }
        command
            .args([
                "--flight-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .env("QUIVER_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("QUIVER_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(yaml) = &options.config {
            let path = data_dir.join("test-config.yaml");
            std::fs::write(&path, yaml)?;
            command.arg("--config").arg(path);
        }
        let mut child = command.spawn().context("starting quiver")?;

        let stderr_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = stderr_lines.clone();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });

        let deadline = Instant::now() + Duration::from_secs(180);
        let (mut flight, mut http) = (None, None);
        while flight.is_none() || http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("Flight SQL:") {
                        flight = rest.trim().strip_prefix("grpc://").map(str::to_string);
                    } else if let Some(rest) = line.trim().strip_prefix("HTTP:") {
                        http = rest.trim().strip_prefix("http://").map(str::to_string);
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let log = stderr_lines.lock().unwrap().join("\n");
                    bail!("quiver did not start listening; its log:\n{log}");
                }
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Ok(Self {
            child,
            flight_addr: flight.expect("flight address"),
            http_addr: http.expect("http address"),
            data_dir,
            _temp: temp,
            stderr: stderr_lines,
        })
    }

    /// `grpc://host:port` of the Flight SQL listener.
    pub fn flight_uri(&self) -> String {
        format!("grpc://{}", self.flight_addr)
    }

    /// A gRPC channel to the Flight SQL listener.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(
            Endpoint::from_shared(format!("http://{}", self.flight_addr))?
                .connect()
                .await?,
        )
    }

    /// A Flight SQL client without credentials.
    pub async fn anonymous_client(&self) -> anyhow::Result<FlightSqlServiceClient<Channel>> {
        Ok(FlightSqlServiceClient::new(self.channel().await?))
    }

    /// A Flight SQL client logged in as the admin.
    pub async fn client(&self) -> anyhow::Result<FlightSqlServiceClient<Channel>> {
        let mut client = self.anonymous_client().await?;
        client.handshake(ADMIN_EMAIL, ADMIN_PASSWORD).await?;
        Ok(client)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("quiver did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sql` through the statement path and collects every batch.
pub async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> anyhow::Result<Vec<RecordBatch>> {
    let info = client.execute(sql.to_string(), None).await?;
    fetch(client, info).await
}

/// Collects every batch of every endpoint of `info`.
pub async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: arrow_flight::FlightInfo,
) -> anyhow::Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.context("endpoint without ticket")?;
        let stream = client.do_get(ticket).await?;
        batches.extend(stream.try_collect::<Vec<_>>().await?);
    }
    Ok(batches)
}

/// Total rows in `batches`.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}
