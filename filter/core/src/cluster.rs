//! Where a deployment's requests go: the upstream parsed from `api_base`.
//!
//! Envoy routes with `cluster_header`, so the filter and the rendered Envoy bootstrap must
//! agree on one cluster name per upstream authority. [`Upstream::cluster`] is that name;
//! both sides call [`cluster_name`].

use std::fmt;

/// The scheme, authority and path prefix of an `api_base`.
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// Explicit port, or the scheme's default.
    pub port: u16,
    /// Path of the `api_base` without a trailing slash (`/v1`, `/openai/v1`, or empty).
    pub path_prefix: String,
    /// Envoy cluster name shared by every deployment on this authority.
    pub cluster: String,
}

/// The upstream protocol.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scheme {
    /// Plain HTTP (local models, mock providers).
    Http,
    /// HTTP over TLS with SNI = host.
    Https,
}

impl Scheme {
    /// The scheme's name as written in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl fmt::Debug for Upstream {
    // api_base is not secret, but keep the output short and stable for snapshots.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.base_url())
    }
}

impl Upstream {
    /// Parses an `api_base` such as `https://api.openai.com/v1`.
    pub fn parse(api_base: &str) -> Result<Self, String> {
        let (scheme, rest) = if let Some(rest) = api_base.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = api_base.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err("must start with http:// or https://".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(idx) => rest.split_at(idx),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err("has no host".into());
        }
        if authority.contains('@') {
            return Err("must not carry credentials (use api_key)".into());
        }
        if path.contains('?') || path.contains('#') {
            return Err("must not have a query or fragment".into());
        }
        let (host, port) = split_host_port(authority, scheme)?;
        let path_prefix = path.trim_end_matches('/').to_string();
        let cluster = cluster_name(scheme, &host, port);
        Ok(Upstream {
            scheme,
            host,
            port,
            path_prefix,
            cluster,
        })
    }

    /// The value of the `:authority` header sent upstream.
    pub fn authority(&self) -> String {
        let default_port = matches!(
            (self.scheme, self.port),
            (Scheme::Http, 80) | (Scheme::Https, 443)
        );
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// `scheme://authority/prefix`, for messages and reports.
    pub fn base_url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.path_prefix
        )
    }
}

fn split_host_port(authority: &str, scheme: Scheme) -> Result<(String, u16), String> {
    let default_port = match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    // IPv6 literal: [::1]:8080
    if let Some(rest) = authority.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err("has an unclosed IPv6 bracket".into());
        };
        let port = match after.strip_prefix(':') {
            Some(port) => parse_port(port)?,
            None if after.is_empty() => default_port,
            None => return Err("has garbage after the IPv6 address".into()),
        };
        return Ok((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((host.to_ascii_lowercase(), parse_port(port)?)),
        None => Ok((authority.to_ascii_lowercase(), default_port)),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("has an invalid port {text:?}")),
        Ok(port) => Ok(port),
    }
}

/// The Envoy cluster name for an upstream authority, e.g. `detour_https_api.openai.com_443`.
///
/// Only `[A-Za-z0-9._-]` survive, so the name is safe in Envoy YAML, stats and headers.
pub fn cluster_name(scheme: Scheme, host: &str, port: u16) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("detour_{}_{}_{}", scheme.as_str(), host, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_bases() {
        let up = Upstream::parse("https://api.openai.com/v1/").unwrap();
        assert_eq!(up.host, "api.openai.com");
        assert_eq!(up.port, 443);
        assert_eq!(up.path_prefix, "/v1");
        assert_eq!(up.authority(), "api.openai.com");
        assert_eq!(up.cluster, "detour_https_api.openai.com_443");

        let up = Upstream::parse("http://127.0.0.1:18001/dep-a/v1").unwrap();
        assert_eq!(up.authority(), "127.0.0.1:18001");
        assert_eq!(up.path_prefix, "/dep-a/v1");
        assert_eq!(up.cluster, "detour_http_127.0.0.1_18001");

        let up = Upstream::parse("http://[::1]:9000").unwrap();
        assert_eq!(up.authority(), "[::1]:9000");
        assert_eq!(up.path_prefix, "");
        assert_eq!(up.cluster, "detour_http___1_9000");
    }

    #[test]
    fn rejects_bad_bases() {
        for bad in [
            "ftp://x",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://u:p@h/v1",
            "http://h/v1?x=1",
            "http://[::1/v1",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }
}
