//! RFC 3339 timestamps from `SOURCE_DATE_EPOCH` (see [`types::time`]).

use crate::SbomError;

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn rfc3339(secs: u64) -> Result<String, SbomError> {
    types::time::rfc3339(secs).ok_or(SbomError::BadTimestamp(secs))
}
