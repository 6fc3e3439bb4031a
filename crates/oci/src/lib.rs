//! The OCI image model and hardbox's image store.
//!
//! The store is an OCI image layout on local disk that other tools (`skopeo`, `umoci`) can read
//! directly. It is content-addressed and crash-safe: a blob is named by its digest only after its
//! bytes were hashed and matched, `index.json` is replaced atomically, every blob is verified
//! before it is trusted, and an interrupted command leaves at most unreferenced blobs and `tmp/`
//! leftovers, which [`Store::gc`] removes and [`Store::fsck`] does not count as damage.
//!
//! Entry point: [`Store`]. Models: [`spec`]. New images and referrers: [`Store::writer`].

mod error;
mod export;
mod images;
mod import;
mod maintenance;
mod names;
pub mod spec;
mod store;
mod unpack;
mod write;

pub use error::{is_unknown_reference, BlobError, NameError, ResolveError, StoreError};
pub use export::{ExportError, ExportFormat};
pub use images::{
    ImageDetails, ImageSummary, LayerSummary, ReadImageError, RemoveError, RemoveReport,
    RunSummary, TagError,
};
pub use import::{ImportError, ImportOptions, ImportedImage, SourceKind};
pub use maintenance::{FsckError, FsckProblem, FsckReport, GcError, GcReport};
pub use names::{normalize_name, split_name};
pub use store::{Image, Store};
pub use unpack::{UnpackError, UnpackReport};
pub use write::{ImageWriter, Referrer, WriteError};
