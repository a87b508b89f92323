//! Statements larger than one machine: their stages run on the live replicas, with
//! [`datafusion-distributed`](https://github.com/datafusion-contrib/datafusion-distributed).
//!
//! Why this engine and not Ballista (both on DataFusion 54 / Arrow 58): datafusion-distributed
//! cuts the *physical* plan a session has already made into stages, so what it spreads is the
//! principal's plan with its policies in it ([`PolicyExec`] over the policy's filter and
//! masks); its workers are a tonic service that mounts on the Flight SQL listener each replica
//! already has; and the list of workers is ours to give (the live replicas in the state
//! database). Ballista brings a scheduler process with its own state, plans from serialized
//! *logical* plans (our per-principal table providers would have to be rebuilt on its
//! executors) and adds processes and ports beside ours.
//!
//! How a statement runs: the replica that received it plans it as before. When it aggregates,
//! joins or windows ([`SpreadReductions`]) and its scans read more than
//! `query.distributed_threshold` bytes, the distributed planner splits them into
//! tasks (at most one per live replica and stage), sends each stage to the replicas' workers
//! as protobuf ([`PlanCodec`] carries our node) and merges what they stream back; smaller
//! statements keep their single-replica plan. A worker accepts a stage only with
//! [`PRINCIPAL_HEADER`] and [`PROOF_HEADER`]: an HMAC of the principal under a key derived
//! from the cluster's JWT secret. Clients never hold it, so none can hand a worker a plan of
//! its own (which could read table files around the policies). Replicas advertising
//! `grpc+tls://` send stages over TLS, trusting `server.tls.ca`. On the worker, the stage runs
//! in the principal's memory pool, with its `current_user` and the bounded functions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DataFusionError, Result, exec_datafusion_err, internal_err};
use datafusion::execution::TaskContext;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion_distributed::grpc::{
    BoxCloneSyncChannel, DefaultChannelResolver, create_worker_client,
};
use datafusion_distributed::{
    ChannelResolver, DistributedExt, SessionStateBuilderExt, WorkerChannel, WorkerResolver,
};
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use sha2::Sha256;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use url::Url;

use crate::engine::policy::PolicyExec;

/// Whose stage it is: the principal's e-mail, base64url (e-mails need not be ASCII).
pub const PRINCIPAL_HEADER: &str = "x-quiver-principal";
/// HMAC-SHA256 of [`PRINCIPAL_HEADER`]'s value under the cluster key, base64url.
pub const PROOF_HEADER: &str = "x-quiver-proof";

/// The replicas a statement's stages may run on, and what proves a stage comes from one.
pub struct Distribution {
    key: [u8; 32],
    workers: Workers,
    /// One set of connections to the workers for every session (the default resolver keeps
    /// one per runtime, and each principal's session has its own).
    channels: Channels,
    /// Bytes scanned past which a statement received here is spread; `None` when this
    /// replica only runs other replicas' stages (`query.distributed: off`).
    threshold: Option<usize>,
}

impl std::fmt::Debug for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distribution")
            .field("workers", &self.workers())
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl Distribution {
    /// Distribution for a cluster whose replicas share `secret`: a statement received here
    /// scanning more than `threshold` bytes is spread (`None`: none is, but this replica
    /// still runs the stages others send). With `ca` (PEM, `server.tls.ca`), replicas
    /// advertising `grpc+tls://` are workers too, reached over TLS trusting that CA.
    pub fn new(secret: &[u8], threshold: Option<usize>, ca: Option<Vec<u8>>) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(b"quiver: distributed stages between replicas, v1");
        Self {
            key: mac.finalize().into_bytes().into(),
            workers: Workers::default(),
            channels: Channels::new(ca),
            threshold: threshold.map(|t| t.max(1)),
        }
    }

    /// Replaces the workers by these advertised Flight SQL URLs (the live replicas, this one
    /// included); `grpc+tls://` ones only with a CA to trust them by.
    pub fn set_workers(&self, advertised: impl IntoIterator<Item = String>) {
        let tls = self.channels.tls.is_some();
        let mut urls: Vec<Url> = advertised
            .into_iter()
            .filter_map(|a| worker_url(&a, tls))
            .collect();
        urls.sort();
        urls.dedup();
        *self.workers.0.write().unwrap_or_else(|p| p.into_inner()) = urls;
    }

    /// The workers stages may be sent to now.
    pub fn workers(&self) -> Vec<Url> {
        self.workers.get_urls().unwrap_or_default()
    }

    /// Whether `principal` and `proof` (the headers' values) come from a replica of this
    /// cluster. Constant-time in the proof.
    pub fn admits(&self, principal: &str, proof: &str) -> bool {
        let Ok(proof) = URL_SAFE_NO_PAD.decode(proof) else {
            return false;
        };
        self.mac(principal).verify_slice(&proof).is_ok()
    }

    fn mac(&self, principal: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(principal.as_bytes());
        mac
    }

    /// The headers every stage of `email`'s statements carries.
    fn headers(&self, email: &str) -> Result<HeaderMap> {
        let principal = URL_SAFE_NO_PAD.encode(email);
        let proof = URL_SAFE_NO_PAD.encode(self.mac(&principal).finalize().into_bytes());
        let value = |v: String| {
            HeaderValue::from_str(&v).map_err(|e| exec_datafusion_err!("stage header: {e}"))
        };
        let mut headers = HeaderMap::new();
        headers.insert(PRINCIPAL_HEADER, value(principal)?);
        headers.insert(PROOF_HEADER, value(proof)?);
        Ok(headers)
    }

    /// The e-mail a stage runs for, when its headers prove it comes from a replica.
    pub(super) fn principal(&self, headers: &HeaderMap) -> Option<String> {
        let principal = headers.get(PRINCIPAL_HEADER)?.to_str().ok()?;
        let proof = headers.get(PROOF_HEADER)?.to_str().ok()?;
        if !self.admits(principal, proof) {
            return None;
        }
        String::from_utf8(URL_SAFE_NO_PAD.decode(principal).ok()?).ok()
    }

    /// Bytes a statement must scan to be spread over the replicas; `None` when statements
    /// received here run here (`query.distributed: off`).
    pub fn threshold(&self) -> Option<usize> {
        self.threshold
    }

    /// `builder` (a principal's session, its config already set) planning distributed, unless
    /// statements received here run here.
    pub(crate) fn coordinate(
        &self,
        builder: SessionStateBuilder,
        email: &str,
    ) -> Result<SessionStateBuilder> {
        let Some(threshold) = self.threshold else {
            return Ok(builder);
        };
        // The planner splits a scan into tasks of `partitions × bytes per partition`.
        let mut builder = builder;
        let partitions = builder
            .config()
            .get_or_insert_default()
            .target_partitions()
            .max(1);
        let mut builder = self
            .stages(builder, email)?
            .with_distributed_worker_resolver(self.workers.clone())
            .with_distributed_file_scan_config_bytes_per_partition(threshold.div_ceil(partitions))?
            .with_distributed_planner();
        let distributed = builder
            .query_planner()
            .take()
            .ok_or_else(|| exec_datafusion_err!("the distributed planner is missing"))?;
        Ok(builder.with_query_planner(Arc::new(SpreadReductions { distributed })))
    }

    /// What sending stages needs, on the coordinator and on workers (which call each other).
    pub(super) fn stages(
        &self,
        builder: SessionStateBuilder,
        email: &str,
    ) -> Result<SessionStateBuilder> {
        builder
            .with_distributed_channel_resolver(self.channels.clone())
            .with_distributed_user_codec(PlanCodec)
            .with_distributed_passthrough_headers(self.headers(email)?)
    }
}

/// Spreads statements that aggregate, join or window: those do work in stages that shrink
/// or reshuffle rows. A plain scan's rows would all come back through this replica anyway,
/// one hop longer, so it runs here; so does a statement reading a remote table.
#[derive(Debug)]
struct SpreadReductions {
    distributed: Arc<dyn QueryPlanner + Send + Sync>,
}

#[async_trait]
impl QueryPlanner for SpreadReductions {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        state: &SessionState,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let reduces = plan.exists(|node| {
            Ok(matches!(
                node,
                LogicalPlan::Aggregate(_) | LogicalPlan::Join(_) | LogicalPlan::Window(_)
            ))
        })?;
        if reduces && !crate::engine::remote::reads_remote(plan) {
            self.distributed.create_physical_plan(plan, state).await
        } else {
            DefaultPhysicalPlanner::default()
                .create_physical_plan(plan, state)
                .await
        }
    }
}

/// `grpc://h:p` → `http://h:p`, and with `tls`, `grpc+tls://h:p` → `https://h:p` (what
/// tonic dials).
fn worker_url(advertised: &str, tls: bool) -> Option<Url> {
    let (scheme, rest) = advertised.split_once("://")?;
    let scheme = match scheme {
        "grpc" | "grpc+tcp" => "http",
        "grpc+tls" if tls => "https",
        _ => return None,
    };
    Url::parse(&format!("{scheme}://{rest}")).ok()
}

/// Connections to the workers: plain ones through the library's resolver (which caches
/// them), TLS ones trusting the cluster's CA, one lazily connecting channel per worker.
#[derive(Clone)]
struct Channels {
    plain: DefaultChannelResolver,
    tls: Option<ClientTlsConfig>,
    secure: Arc<Mutex<HashMap<Url, BoxCloneSyncChannel>>>,
}

impl Channels {
    fn new(ca: Option<Vec<u8>>) -> Self {
        Self {
            plain: DefaultChannelResolver::default(),
            tls: ca.map(|pem| ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))),
            secure: Arc::default(),
        }
    }
}

#[async_trait]
impl ChannelResolver for Channels {
    async fn get_worker_client_for_url(&self, url: &Url) -> Result<Box<dyn WorkerChannel>> {
        let Some(tls) = self.tls.clone().filter(|_| url.scheme() == "https") else {
            return self.plain.get_worker_client_for_url(url).await;
        };
        let mut secure = self.secure.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match secure.get(url) {
            Some(channel) => channel.clone(),
            None => {
                let endpoint = Endpoint::from_shared(url.to_string())
                    .and_then(|e| e.tls_config(tls))
                    .map_err(|e| exec_datafusion_err!("worker {url}: {e}"))?;
                let channel = BoxCloneSyncChannel::new(endpoint.connect_lazy());
                secure.insert(url.clone(), channel.clone());
                channel
            }
        };
        Ok(create_worker_client(channel))
    }
}

/// The live replicas' workers, refreshed by the cluster watcher and read at planning.
#[derive(Clone, Default)]
struct Workers(Arc<RwLock<Vec<Url>>>);

impl WorkerResolver for Workers {
    fn get_urls(&self) -> Result<Vec<Url>> {
        Ok(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Carries Quiver's own plan nodes between replicas.
#[derive(Debug)]
struct PlanCodec;

const POLICY_EXEC: &[u8] = b"quiver.PolicyExec";

impl PhysicalExtensionCodec for PlanCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (buf, inputs) {
            (POLICY_EXEC, [input]) => Ok(Arc::new(PolicyExec::new(input.clone()))),
            _ => internal_err!("a stage holds a plan node this replica does not know"),
        }
    }

    fn try_encode(&self, node: Arc<dyn ExecutionPlan>, buf: &mut Vec<u8>) -> Result<()> {
        if node.is::<PolicyExec>() {
            buf.extend_from_slice(POLICY_EXEC);
            return Ok(());
        }
        Err(DataFusionError::NotImplemented(format!(
            "{} cannot run on another replica",
            node.name()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_clusters_key_proves_a_principal() {
        let ours = Distribution::new(b"cluster secret", Some(1 << 20), None);
        let headers = ours.headers("ana@example.com").unwrap();
        assert_eq!(ours.principal(&headers).as_deref(), Some("ana@example.com"));

        // Another secret, another principal under the same proof, or no proof: refused.
        let theirs = Distribution::new(b"another secret", None, None);
        assert_eq!(theirs.principal(&headers), None);
        let mut forged = headers.clone();
        forged.insert(
            PRINCIPAL_HEADER,
            HeaderValue::from_str(&URL_SAFE_NO_PAD.encode("admin@example.com")).unwrap(),
        );
        assert_eq!(ours.principal(&forged), None);
        let mut bare = headers;
        bare.remove(PROOF_HEADER);
        assert_eq!(ours.principal(&bare), None);
    }

    #[test]
    fn advertised_urls_become_worker_urls() {
        let advertised = [
            "grpc://10.0.0.2:50051",
            "grpc+tls://q1.example.com:443",
            "grpc://10.0.0.2:50051",
            "http://elsewhere:80",
        ];
        let urls = |ca: Option<Vec<u8>>| {
            let d = Distribution::new(b"s", None, ca);
            d.set_workers(advertised.map(String::from));
            d.workers().iter().map(Url::to_string).collect::<Vec<_>>()
        };
        // TLS replicas are workers only with a CA to trust them by.
        assert_eq!(urls(None), ["http://10.0.0.2:50051/"]);
        assert_eq!(
            urls(Some(b"-----BEGIN CERTIFICATE-----".to_vec())),
            ["http://10.0.0.2:50051/", "https://q1.example.com/"]
        );
    }
}
