//! Table data in object storage: a local directory by default, `s3://…` by URL.
//!
//! Layout: `tables/<schema>/<table>/<run-id>/part-NNNNN.parquet`; sharded tables
//! `tables/<schema>/<table>/<shard>/<uuid>.parquet`; webhook bodies `webhooks/<source>/`. A writer fills a fresh
//! run folder; the folder becomes a *version* only when the state store commits it, so a
//! reader (who resolves tables through the state store) never sees a half-written folder.

use std::path::Path;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use url::Url;

use crate::{CatalogError, TableName};

/// The object store holding table data, with the URL DataFusion resolves it by.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Scheme and authority, e.g. `file:///` or `s3://bucket/`.
    base_url: Url,
    /// Key prefix inside the store under which Quiver keeps everything.
    root: ObjectPath,
}

impl Storage {
    /// Opens the store at `url` (`file:///abs/dir`, `s3://bucket/prefix`, `memory://`).
    /// A local directory is created when missing. `options` configure remote stores with
    /// `object_store`'s keys (`aws_access_key_id`, `aws_endpoint`, `aws_allow_http`, …).
    pub fn open(
        url: &str,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, CatalogError> {
        let parsed = Url::parse(url).map_err(|e| {
            CatalogError::Storage(format!("`{url}` is not a valid object store URL: {e}"))
        })?;
        match parsed.scheme() {
            "file" => {
                let dir = parsed.to_file_path().map_err(|_| {
                    CatalogError::Storage(format!("`{url}` is not an absolute file URL"))
                })?;
                Self::local(&dir)
            }
            _ => {
                let (store, root) =
                    object_store::parse_url_opts(&parsed, options).map_err(|e| {
                        CatalogError::Storage(format!("cannot open object store `{url}`: {e}"))
                    })?;
                let mut base_url = parsed.clone();
                base_url.set_path("/");
                Ok(Self {
                    store: Arc::from(store),
                    base_url,
                    root,
                })
            }
        }
    }

    /// A store rooted at a local directory (created when missing).
    pub fn local(dir: &Path) -> Result<Self, CatalogError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            CatalogError::Storage(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let dir = dir
            .canonicalize()
            .map_err(|e| CatalogError::Storage(format!("cannot resolve {}: {e}", dir.display())))?;
        let root = ObjectPath::from_filesystem_path(&dir)
            .map_err(|e| CatalogError::Storage(format!("bad data directory: {e}")))?;
        Ok(Self {
            // Rooted at `/` so `root` is an ordinary key prefix, as for S3.
            store: Arc::new(LocalFileSystem::new().with_automatic_cleanup(true)),
            base_url: Url::parse("file:///").expect("static URL"),
            root,
        })
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The URL under which DataFusion's object-store registry must know [`Self::store`].
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The folder for a new, not yet committed run of `table`.
    pub fn new_run_prefix(&self, table: &TableName) -> ObjectPath {
        let run = uuid::Uuid::new_v4().simple().to_string();
        self.table_prefix(table).join(run)
    }

    /// All data of `table`, every version.
    pub fn table_prefix(&self, table: &TableName) -> ObjectPath {
        self.root
            .clone()
            .join("tables")
            .join(table.schema())
            .join(table.table())
    }

    /// The key prefix of a folder URL made by [`Self::folder_url`].
    pub fn prefix_of(&self, folder_url: &str) -> Option<ObjectPath> {
        let rest = folder_url.strip_prefix(self.base_url.as_str())?;
        Some(ObjectPath::from(rest.trim_end_matches('/')))
    }

    /// Where raw webhook bodies from `source` are kept.
    pub fn inbox_prefix(&self, source: &str) -> ObjectPath {
        self.root.clone().join("webhooks").join(source)
    }

    /// Runs folders of every table, as key prefixes (for the orphan sweep).
    pub fn tables_root(&self) -> ObjectPath {
        self.root.clone().join("tables")
    }

    /// Where `key` is on the local disk, for a store on one.
    pub fn local_path(&self, key: &ObjectPath) -> Option<std::path::PathBuf> {
        (self.base_url.scheme() == "file").then(|| std::path::PathBuf::from(format!("/{key}")))
    }

    /// Makes a folder durable: on a local disk, fsyncs its files and the folder itself
    /// (`LocalFileSystem` renames into place but does not sync). A no-op elsewhere.
    pub async fn sync_folder(&self, prefix: &ObjectPath) -> Result<(), CatalogError> {
        let Some(dir) = self.local_path(prefix) else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if !dir.exists() {
                return Ok(());
            }
            for entry in std::fs::read_dir(&dir)? {
                std::fs::File::open(entry?.path())?.sync_all()?;
            }
            std::fs::File::open(&dir)?.sync_all()?;
            if let Some(parent) = dir.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| CatalogError::Internal(e.to_string()))?
        .map_err(|e| CatalogError::Storage(format!("fsync: {e}")))
    }

    /// Makes one new file durable: on a local disk, fsyncs it and its folders. A no-op
    /// elsewhere.
    pub async fn sync_file(&self, key: &ObjectPath) -> Result<(), CatalogError> {
        let Some(file) = self.local_path(key) else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::File::open(&file)?.sync_all()?;
            // The folder holding it, and the one holding that (the folder may be new).
            for folder in file.ancestors().skip(1).take(2) {
                std::fs::File::open(folder)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| CatalogError::Internal(e.to_string()))?
        .map_err(|e| CatalogError::Storage(format!("fsync: {e}")))
    }

    /// Removes every file under `prefix`, logging (not failing) what cannot be removed:
    /// for cleaning up after a write that was not committed (the sweep removes the rest).
    pub async fn delete_folder(&self, prefix: &ObjectPath) {
        use futures::{StreamExt, TryStreamExt};
        let store = self.store();
        let locations = store
            .list(Some(prefix))
            .map_ok(|meta| meta.location)
            .boxed();
        let deleted: Result<Vec<_>, _> = store.delete_stream(locations).try_collect().await;
        if let Err(e) = deleted {
            tracing::warn!(folder = %prefix, error = %e, "cannot remove an uncommitted write's files; the sweep will");
        }
    }

    /// The URL of one file.
    pub fn file_url(&self, key: &ObjectPath) -> String {
        format!("{}{}", self.base_url, key)
    }

    /// The URL of a folder, as DataFusion's `ListingTableUrl` expects it (trailing slash).
    pub fn folder_url(&self, prefix: &ObjectPath) -> String {
        format!("{}{}/", self.base_url, prefix)
    }
}
