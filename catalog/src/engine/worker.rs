//! The worker side of distributed statements ([`crate::engine::distributed`]): this replica
//! runs the stages other replicas (or this one) send, each in a session of the principal
//! the stage proves it runs for, with that principal's memory pool and functions.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::{Result, exec_datafusion_err};
use datafusion::execution::session_state::SessionState;
use datafusion::prelude::SessionContext;
use datafusion_distributed::{Worker, WorkerQueryContext, WorkerSessionBuilder};

use crate::engine::QueryEngine;

/// This replica's worker: runs stages other replicas (or this one) send, each in a session
/// of the principal it proves it runs for.
pub fn worker(engine: Arc<QueryEngine>) -> Worker {
    Worker::from_session_builder(WorkerSessions { engine })
}

struct WorkerSessions {
    engine: Arc<QueryEngine>,
}

#[async_trait]
impl WorkerSessionBuilder for WorkerSessions {
    async fn build_session_state(&self, query: WorkerQueryContext) -> Result<SessionState> {
        let Some(distribution) = self.engine.distribution() else {
            return Err(exec_datafusion_err!(
                "this replica does not run distributed stages"
            ));
        };
        let email = distribution.principal(&query.headers).ok_or_else(|| {
            exec_datafusion_err!(
                "a stage came without proof that a replica of this cluster sent it"
            )
        })?;
        metrics::counter!("quiver_distributed_stages_total").increment(1);
        let (runtime, pool) = self.engine.user_runtime(&email);
        let builder = distribution.stages(query.builder.with_runtime_env(runtime), &email)?;
        let ctx = SessionContext::new_with_state(builder.build());
        self.engine
            .register_functions(&ctx, &email, &pool)
            .map_err(|e| exec_datafusion_err!("{e}"))?;
        ctx.register_udf(crate::engine::functions::checked_size(&pool));
        Ok(ctx.state())
    }
}
