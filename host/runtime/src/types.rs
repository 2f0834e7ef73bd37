//! The ABI's enums and its one wire format (header maps as "pairs").
//!
//! Numbers are ABI 0.2.1's (proxy-wasm spec, `# Types`). The enums are closed: a guest
//! value the ABI does not define is a [`Status::BadArgument`] at the hostcall boundary.

/// A hostcall's result as the guest sees it.
///
/// Only the values the Rust SDK 0.2.x can represent are ever returned to a guest:
/// `InvalidMemoryAccess` (6) and `Unimplemented` (12) are not in the SDK's `Status` enum
/// (returning them is undefined behaviour there), so this host traps on bad pointers
/// instead and answers unsupported features with the status Envoy uses for "no such
/// thing" (`NotFound`, `BadArgument`, `ParseFailure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// 0: done.
    Ok,
    /// 1: no such key, map value, queue, context, metric, property.
    NotFound,
    /// 2: an argument is out of range, or the map/buffer is not available now.
    BadArgument,
    /// 3: a property exists but cannot be serialized.
    SerializationFailure,
    /// 4: unknown gRPC upstream.
    ParseFailure,
    /// 7: the shared queue is empty.
    Empty,
    /// 8: the shared-data CAS did not match.
    CasMismatch,
    /// 10: the host failed.
    InternalFailure,
}

impl Status {
    /// The ABI's number.
    pub fn code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::NotFound => 1,
            Status::BadArgument => 2,
            Status::SerializationFailure => 3,
            Status::ParseFailure => 4,
            Status::Empty => 7,
            Status::CasMismatch => 8,
            Status::InternalFailure => 10,
        }
    }
}

/// `proxy_log` levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// 0
    Trace,
    /// 1
    Debug,
    /// 2
    Info,
    /// 3
    Warn,
    /// 4
    Error,
    /// 5
    Critical,
}

impl LogLevel {
    /// From the ABI's number.
    pub fn from_abi(level: i32) -> Option<Self> {
        Some(match level {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }

    /// The ABI's number.
    pub fn to_abi(self) -> i32 {
        match self {
            LogLevel::Trace => 0,
            LogLevel::Debug => 1,
            LogLevel::Info => 2,
            LogLevel::Warn => 3,
            LogLevel::Error => 4,
            LogLevel::Critical => 5,
        }
    }

    /// Lower-case name, as Envoy prints it (`info`, `critical`).
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }
}

/// What a stream callback tells the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// 0: go on.
    Continue,
    /// 1 (or anything else): hold the stream here.
    Pause,
}

impl Action {
    /// From a callback's return value; values above 1 are "stop" as in cpp-host.
    pub fn from_abi(value: i32) -> Self {
        if value == 0 {
            Action::Continue
        } else {
            Action::Pause
        }
    }
}

/// `proxy_*_header_map_*` map types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapType {
    /// 0
    HttpRequestHeaders,
    /// 1
    HttpRequestTrailers,
    /// 2
    HttpResponseHeaders,
    /// 3
    HttpResponseTrailers,
    /// 4
    GrpcInitialMetadata,
    /// 5
    GrpcTrailingMetadata,
    /// 6
    HttpCallResponseHeaders,
    /// 7
    HttpCallResponseTrailers,
}

impl MapType {
    /// From the ABI's number.
    pub fn from_abi(value: i32) -> Option<Self> {
        Some(match value {
            0 => MapType::HttpRequestHeaders,
            1 => MapType::HttpRequestTrailers,
            2 => MapType::HttpResponseHeaders,
            3 => MapType::HttpResponseTrailers,
            4 => MapType::GrpcInitialMetadata,
            5 => MapType::GrpcTrailingMetadata,
            6 => MapType::HttpCallResponseHeaders,
            7 => MapType::HttpCallResponseTrailers,
            _ => return None,
        })
    }
}

/// `proxy_*_buffer_*` buffer types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BufferType {
    /// 0
    HttpRequestBody,
    /// 1
    HttpResponseBody,
    /// 2
    DownstreamData,
    /// 3
    UpstreamData,
    /// 4
    HttpCallResponseBody,
    /// 5
    GrpcReceiveBuffer,
    /// 6
    VmConfiguration,
    /// 7
    PluginConfiguration,
    /// 8
    ForeignFunctionArguments,
}

impl BufferType {
    /// From the ABI's number.
    pub fn from_abi(value: i32) -> Option<Self> {
        Some(match value {
            0 => BufferType::HttpRequestBody,
            1 => BufferType::HttpResponseBody,
            2 => BufferType::DownstreamData,
            3 => BufferType::UpstreamData,
            4 => BufferType::HttpCallResponseBody,
            5 => BufferType::GrpcReceiveBuffer,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            8 => BufferType::ForeignFunctionArguments,
            _ => return None,
        })
    }
}

/// `proxy_continue_stream` / `proxy_close_stream` stream types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamType {
    /// 0
    HttpRequest,
    /// 1
    HttpResponse,
    /// 2
    Downstream,
    /// 3
    Upstream,
}

impl StreamType {
    /// From the ABI's number.
    pub fn from_abi(value: i32) -> Option<Self> {
        Some(match value {
            0 => StreamType::HttpRequest,
            1 => StreamType::HttpResponse,
            2 => StreamType::Downstream,
            3 => StreamType::Upstream,
            _ => return None,
        })
    }
}

/// `proxy_define_metric` types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// 0: only goes up.
    Counter,
    /// 1: set, or moved either way.
    Gauge,
    /// 2: samples.
    Histogram,
}

impl MetricType {
    /// From the ABI's number.
    pub fn from_abi(value: i32) -> Option<Self> {
        Some(match value {
            0 => MetricType::Counter,
            1 => MetricType::Gauge,
            2 => MetricType::Histogram,
            _ => return None,
        })
    }
}

/// The most pairs a serialized map may hold, and its largest size (cpp-host's limits).
pub const MAX_PAIRS: usize = 1024;
/// See [`MAX_PAIRS`].
pub const MAX_PAIRS_BYTES: usize = 1 << 20;

/// A header map: ordered pairs, repeated names allowed, names lower-case.
///
/// Values are bytes (Envoy keeps non-UTF-8 values as they are). Every operation
/// lower-cases the name it is given, as Envoy does on every map hostcall.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl HeaderMap {
    /// An empty map.
    pub fn new() -> Self {
        HeaderMap::default()
    }

    /// A map from pairs (names are lower-cased).
    pub fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        HeaderMap {
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (k.as_ref().to_ascii_lowercase(), v.as_ref().to_vec()))
                .collect(),
        }
    }

    /// The pairs, in order.
    pub fn pairs(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.pairs
    }

    /// How many pairs (pseudo-headers included).
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The first value of `name`.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        let name = name.to_ascii_lowercase();
        self.pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name` as text, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name.as_bytes())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Appends a pair (a repeated name adds a value).
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        self.pairs.push((name.to_ascii_lowercase(), value.to_vec()));
    }

    /// Sets `name` to exactly one value, where its first value was (or at the end).
    pub fn replace(&mut self, name: &[u8], value: &[u8]) {
        let name = name.to_ascii_lowercase();
        match self.pairs.iter().position(|(k, _)| *k == name) {
            Some(idx) => {
                if let Some(slot) = self.pairs.get_mut(idx) {
                    slot.1 = value.to_vec();
                }
                let mut seen = 0_usize;
                self.pairs.retain(|(k, _)| {
                    if *k == name {
                        seen += 1;
                        seen == 1
                    } else {
                        true
                    }
                });
            }
            None => self.pairs.push((name, value.to_vec())),
        }
    }

    /// Removes every value of `name` (absent is fine).
    pub fn remove(&mut self, name: &[u8]) {
        let name = name.to_ascii_lowercase();
        self.pairs.retain(|(k, _)| *k != name);
    }

    /// Replaces every pair.
    pub fn set_all(&mut self, other: HeaderMap) {
        *self = other;
    }

    /// The total of name and value lengths (`proxy_get_header_map_size`).
    pub fn byte_size(&self) -> usize {
        self.pairs.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The ABI's serialized form: `u32 count`, `count × (u32 key_len, u32 value_len)`,
    /// then each key and value followed by a NUL. Little-endian.
    pub fn serialize(&self) -> Vec<u8> {
        serialize_pairs(self.pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
    }
}

/// Serializes pairs in the ABI's format (see [`HeaderMap::serialize`]).
pub fn serialize_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let count = pairs.clone().count();
    let data: usize = pairs.clone().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + count * 8 + data);
    out.extend_from_slice(&u32_le(count));
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&u32_le(k.len()));
        out.extend_from_slice(&u32_le(v.len()));
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

fn u32_le(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes()
}

/// Parses the ABI's pairs format strictly: every length must fit, both NULs must be
/// there and the total length must match. Empty input (or a single NUL) is an empty
/// map. `None` for malformed input or more than [`MAX_PAIRS`] pairs /
/// [`MAX_PAIRS_BYTES`] bytes. (cpp-host silently yields an empty map instead; this host
/// reports it, and the hostcall answers `BadArgument`.)
pub fn parse_pairs(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.is_empty() || bytes == [0] {
        return Some(Vec::new());
    }
    if bytes.len() > MAX_PAIRS_BYTES {
        return None;
    }
    let read_u32 = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(raw)).ok()
    };
    let count = read_u32(0)?;
    if count > MAX_PAIRS {
        return None;
    }
    let mut lengths = Vec::with_capacity(count);
    for idx in 0..count {
        let at = 4 + idx * 8;
        lengths.push((read_u32(at)?, read_u32(at + 4)?));
    }
    let mut at = 4 + count * 8;
    let mut pairs = Vec::with_capacity(count);
    for (klen, vlen) in lengths {
        let key = bytes.get(at..at.checked_add(klen)?)?.to_vec();
        at += klen;
        if bytes.get(at) != Some(&0) {
            return None;
        }
        at += 1;
        let value = bytes.get(at..at.checked_add(vlen)?)?.to_vec();
        at += vlen;
        if bytes.get(at) != Some(&0) {
            return None;
        }
        at += 1;
        pairs.push((key, value));
    }
    (at == bytes.len()).then_some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_match_the_spec_layout() {
        let map = HeaderMap::from_pairs([(":method", "GET"), ("X-A", "1"), ("x-a", "2")]);
        let bytes = map.serialize();
        assert_eq!(&bytes[..4], &3u32.to_le_bytes());
        assert_eq!(&bytes[4..12], &[7, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(&bytes[28..40], b":method\0GET\0");
        let parsed = parse_pairs(&bytes).unwrap();
        assert_eq!(HeaderMap::from_pairs(parsed), map);
        assert_eq!(map.get(b"X-a"), Some(&b"1"[..]));
    }

    #[test]
    fn empty_and_malformed_pairs() {
        assert_eq!(parse_pairs(b""), Some(vec![]));
        assert_eq!(parse_pairs(&[0]), Some(vec![]));
        assert_eq!(parse_pairs(&[0, 0, 0, 0]), Some(vec![]));
        let mut bytes = HeaderMap::from_pairs([("a", "b")]).serialize();
        bytes.pop();
        assert_eq!(parse_pairs(&bytes), None);
        bytes.extend_from_slice(&[0, 0]);
        assert_eq!(parse_pairs(&bytes), None);
        assert_eq!(parse_pairs(&[5, 0, 0, 0]), None);
    }

    #[test]
    fn replace_keeps_position_and_drops_repeats() {
        let mut map = HeaderMap::from_pairs([("a", "1"), ("b", "2"), ("a", "3")]);
        map.replace(b"A", b"9");
        assert_eq!(
            map.pairs(),
            &[
                (b"a".to_vec(), b"9".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ]
        );
        map.remove(b"B");
        map.replace(b"c", b"x");
        assert_eq!(map.len(), 2);
        assert_eq!(map.byte_size(), 4);
    }
}
