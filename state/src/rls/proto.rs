//! The messages of Envoy's rate limit service API v3, written by hand (no `protoc` here).
//!
//! Field numbers and types are those of envoyproxy/envoy
//! `api/envoy/service/ratelimit/v3/rls.proto` (`RateLimitRequest`, `RateLimitResponse`)
//! and `api/envoy/extensions/common/ratelimit/v3/ratelimit.proto`
//! (`RateLimitDescriptor`, read at commit 75fb1f6). Fields this service never reads or
//! writes (`response_headers_to_add`, `raw_body`, `dynamic_metadata`, `quota`) are left
//! out: protobuf decoders skip unknown fields, and absent fields are their defaults.
//!
//! `RateLimitDescriptor.hits_addend` (field 3, a `google.protobuf.UInt64Value`) is the
//! per-descriptor addend newer Envoy versions send; older ones never set it, and the
//! snapshot named above predates it. It is decoded when present and overrides the
//! request's `hits_addend` for that descriptor.

/// `envoy.service.ratelimit.v3.RateLimitRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitRequest {
    /// `string domain = 1;`
    #[prost(string, tag = "1")]
    pub domain: String,
    /// `repeated envoy.extensions.common.ratelimit.v3.RateLimitDescriptor descriptors = 2;`
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    /// `uint32 hits_addend = 3;` (0 or absent: 1)
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitDescriptor {
    /// `repeated Entry entries = 1;`
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
    /// `RateLimitOverride limit = 2;`
    #[prost(message, optional, tag = "2")]
    pub limit: Option<RateLimitOverride>,
    /// `google.protobuf.UInt64Value hits_addend = 3;` (newer Envoy)
    #[prost(message, optional, tag = "3")]
    pub hits_addend: Option<UInt64Value>,
}

/// `RateLimitDescriptor.Entry`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    /// `string key = 1;`
    #[prost(string, tag = "1")]
    pub key: String,
    /// `string value = 2;`
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `RateLimitDescriptor.RateLimitOverride`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitOverride {
    /// `uint32 requests_per_unit = 1;`
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    /// `envoy.type.v3.RateLimitUnit unit = 2;` (same numbering as [`Unit`])
    #[prost(enumeration = "Unit", tag = "2")]
    pub unit: i32,
}

/// `google.protobuf.UInt64Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UInt64Value {
    /// `uint64 value = 1;`
    #[prost(uint64, tag = "1")]
    pub value: u64,
}

/// `envoy.service.ratelimit.v3.RateLimitResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitResponse {
    /// `Code overall_code = 1;`
    #[prost(enumeration = "Code", tag = "1")]
    pub overall_code: i32,
    /// `repeated DescriptorStatus statuses = 2;`, one per request descriptor, in order.
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
}

/// `RateLimitResponse.DescriptorStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DescriptorStatus {
    /// `Code code = 1;`
    #[prost(enumeration = "Code", tag = "1")]
    pub code: i32,
    /// `RateLimit current_limit = 2;`
    #[prost(message, optional, tag = "2")]
    pub current_limit: Option<RateLimit>,
    /// `uint32 limit_remaining = 3;`
    #[prost(uint32, tag = "3")]
    pub limit_remaining: u32,
    /// `google.protobuf.Duration duration_until_reset = 4;`
    #[prost(message, optional, tag = "4")]
    pub duration_until_reset: Option<Duration>,
}

/// `RateLimitResponse.RateLimit`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimit {
    /// `string name = 3;`
    #[prost(string, tag = "3")]
    pub name: String,
    /// `uint32 requests_per_unit = 1;`
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    /// `Unit unit = 2;`
    #[prost(enumeration = "Unit", tag = "2")]
    pub unit: i32,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Duration {
    /// `int64 seconds = 1;`
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// `int32 nanos = 2;`
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `RateLimitResponse.Code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Code {
    /// `UNKNOWN = 0;`
    Unknown = 0,
    /// `OK = 1;`
    Ok = 1,
    /// `OVER_LIMIT = 2;`
    OverLimit = 2,
}

/// `RateLimitResponse.RateLimit.Unit` (and `envoy.type.v3.RateLimitUnit`, same numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Unit {
    /// `UNKNOWN = 0;`
    Unknown = 0,
    /// `SECOND = 1;`
    Second = 1,
    /// `MINUTE = 2;`
    Minute = 2,
    /// `HOUR = 3;`
    Hour = 3,
    /// `DAY = 4;`
    Day = 4,
    /// `MONTH = 5;`
    Month = 5,
    /// `YEAR = 6;`
    Year = 6,
}

impl Unit {
    /// The window of a unit in milliseconds (a month is 30 days and a year 365, as a
    /// fixed window needs; calendar periods are the budget ledger's business).
    pub fn window_ms(self) -> Option<u64> {
        const DAY: u64 = 86_400_000;
        match self {
            Unit::Unknown => None,
            Unit::Second => Some(1_000),
            Unit::Minute => Some(60_000),
            Unit::Hour => Some(3_600_000),
            Unit::Day => Some(DAY),
            Unit::Month => Some(30 * DAY),
            Unit::Year => Some(365 * DAY),
        }
    }
}
