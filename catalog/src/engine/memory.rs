//! Per-user memory: each user's queries draw from their own pool, which draws from the
//! server-wide pool, so one user cannot take all the memory and the server's total stays
//! bounded. Spilling operators spill when either pool says no.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// A user's pool nested in the server's.
#[derive(Debug)]
pub(crate) struct UserPool {
    user: FairSpillPool,
    server: Arc<dyn MemoryPool>,
}

impl UserPool {
    /// A pool of `limit` bytes drawing from `server`.
    pub(crate) fn new(limit: usize, server: Arc<dyn MemoryPool>) -> Self {
        Self {
            user: FairSpillPool::new(limit),
            server,
        }
    }
}

impl MemoryPool for UserPool {
    fn name(&self) -> &str {
        "quiver-user"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.user.register(consumer);
        self.server.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.user.unregister(consumer);
        self.server.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.user.grow(reservation, additional);
        self.server.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.user.shrink(reservation, shrink);
        self.server.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        // The setting is named in the root error, which is what clients are shown.
        self.user.try_grow(reservation, additional).map_err(|e| {
            DataFusionError::ResourcesExhausted(format!(
                "your share of memory is used up (query.memory_limit_per_user): {}",
                e.find_root().strip_backtrace()
            ))
        })?;
        if let Err(e) = self.server.try_grow(reservation, additional) {
            self.user.shrink(reservation, additional);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the server's memory is used up (query.memory_limit): {}",
                e.find_root().strip_backtrace()
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.user.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.user.memory_limit()
    }
}

impl std::fmt::Display for UserPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "user pool: {} bytes reserved ({}); server: {}",
            self.user.reserved(),
            self.user,
            self.server
        )
    }
}
