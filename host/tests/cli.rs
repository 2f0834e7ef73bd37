//! The subcommands end to end: through `detour::run` with captured output, and through
//! the built binary for exit statuses.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should fail the test loudly"
)]

mod common;

use std::path::Path;
use std::process::{Command, ExitCode};

use clap::Parser;
use common::*;
use detour::{exit_codes, Cli, CliError};

struct Run {
    code: Result<ExitCode, CliError>,
    out: String,
    err: String,
}

fn run(args: &[&str]) -> Run {
    let cli = Cli::try_parse_from(std::iter::once("detour").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = detour::run(cli, &mut out, &mut err);
    Run {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

fn code(status: u8) -> ExitCode {
    ExitCode::from(status)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Uses `os.environ/PATH` as its key: the one variable every test process has.
const WITH_REAL_ENV_KEY: &str = "\
model_list:
  - model_name: fast
    litellm_params:
      model: openai/mock
      api_base: http://127.0.0.1:18001/v1
      api_key: os.environ/PATH
      unknown_param: 1
";

const UNSET_ENV_KEY: &str = "\
model_list:
  - model_name: fast
    litellm_params:
      model: openai/mock
      api_base: http://127.0.0.1:18001/v1
      api_key: os.environ/DETOUR_TEST_VARIABLE_THAT_IS_NEVER_SET
";

const INVALID: &str = "\
model_list:
  - model_name: fast
    litellm_params:
      model: bedrock/anthropic.claude-v2
  - model_name: other
    litellm_params:
      model: openai/x
      api_base: ftp://nope
";

const BASE_FROM_ENV: &str = "\
model_list:
  - model_name: fast
    litellm_params:
      model: openai/mock
      api_base: os.environ/DETOUR_TEST_VARIABLE_THAT_IS_NEVER_SET
";

#[test]
fn validate_ok_prints_warnings_and_a_summary() {
    let dir = scratch_dir("validate-ok");
    let config = write(&dir, "c.yaml", WITH_REAL_ENV_KEY);
    let r = run(&["validate", &config]);
    assert_eq!(r.code.unwrap(), code(exit_codes::OK));
    assert_eq!(r.out, "config ok: 1 deployments in 1 groups\n");
    assert!(
        r.err
            .contains("warning: model_list[0].litellm_params.unknown_param: "),
        "{}",
        r.err
    );

    let config = write(&dir, "h.yaml", HTTPS_ENV_KEYS);
    let r = run(&["validate", "--no-env", &config]);
    assert_eq!(r.code.unwrap(), code(exit_codes::OK));
    assert_eq!(r.out, "config ok: 3 deployments in 2 groups\n");
}

#[test]
fn validate_invalid_lists_every_error_and_exits_3() {
    let dir = scratch_dir("validate-invalid");
    let config = write(&dir, "c.yaml", INVALID);
    let r = run(&["validate", &config]);
    assert_eq!(r.code.unwrap(), code(exit_codes::CONFIG_INVALID));
    assert_eq!(r.out, "config invalid: 2 errors\n");
    let errors: Vec<&str> = r.err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 2, "{}", r.err);
    assert!(errors[0].starts_with("error: model_list[0].litellm_params.model: "));
    assert!(errors[1].starts_with("error: model_list[1].litellm_params.api_base: "));
}

#[test]
fn validate_reads_the_environment_unless_no_env() {
    let dir = scratch_dir("validate-env");
    let config = write(&dir, "c.yaml", UNSET_ENV_KEY);
    let r = run(&["validate", &config]);
    assert_eq!(r.code.unwrap(), code(exit_codes::CONFIG_INVALID));
    assert!(r
        .err
        .contains("DETOUR_TEST_VARIABLE_THAT_IS_NEVER_SET is not set"));
    let r = run(&["validate", "--no-env", &config]);
    assert_eq!(r.code.unwrap(), code(exit_codes::OK), "{}", r.err);

    // The placeholder is URL-shaped, so an api_base from the environment validates too.
    let config = write(&dir, "b.yaml", BASE_FROM_ENV);
    let r = run(&["validate", "--no-env", &config]);
    assert_eq!(r.code.unwrap(), code(exit_codes::OK), "{}", r.err);
}

#[test]
fn validate_non_utf8_is_invalid_and_a_missing_file_is_io() {
    let dir = scratch_dir("validate-bytes");
    let path = dir.join("bad.yaml");
    std::fs::write(&path, b"model_list: \xff\n").unwrap();
    let r = run(&["validate", path.to_str().unwrap()]);
    assert_eq!(r.code.unwrap(), code(exit_codes::CONFIG_INVALID));
    assert!(r.err.contains("is not UTF-8"), "{}", r.err);

    let missing = dir.join("missing.yaml");
    let r = run(&["validate", missing.to_str().unwrap()]);
    let error = r.code.unwrap_err();
    assert_eq!(error.exit_status(), exit_codes::IO);
    assert!(error.to_string().starts_with("cannot read "), "{error}");
}

#[test]
fn envoy_writes_yaml_to_stdout_with_an_absolute_wasm_path() {
    let dir = scratch_dir("envoy-stdout");
    let config = write(&dir, "c.yaml", HTTPS_ENV_KEYS);
    let r = run(&[
        "envoy",
        &config,
        "--no-env",
        "--wasm",
        "some/dir/detour.wasm",
    ]);
    assert_eq!(r.code.unwrap(), code(exit_codes::OK), "{}", r.err);
    let b = parse(&r.out);
    let wasm = str_at(plugin_config(&b), "vm_config.code.local.filename");
    assert!(Path::new(wasm).is_absolute(), "{wasm}");
    assert!(wasm.ends_with("some/dir/detour.wasm"));
    assert!(r.err.contains("does not exist yet"), "{}", r.err);
    assert_eq!(
        str_at(plugin_config(&b), "configuration.value"),
        HTTPS_ENV_KEYS
    );

    // Without --wasm: ./target/detour.wasm, made absolute.
    let r = run(&["envoy", &config, "--no-env"]);
    let b = parse(&r.out);
    let expected = std::env::current_dir().unwrap().join("target/detour.wasm");
    assert_eq!(
        str_at(plugin_config(&b), "vm_config.code.local.filename"),
        expected.to_str().unwrap()
    );
}

#[test]
fn envoy_output_file_and_options() {
    let dir = scratch_dir("envoy-file");
    let config = write(&dir, "c.yaml", IPV6);
    let output = dir.join("envoy.yaml");
    let r = run(&[
        "envoy",
        &config,
        "--listen",
        "[::1]:0",
        "--admin",
        "127.0.0.1:0",
        "--concurrency-hint",
        "4",
        "-o",
        output.to_str().unwrap(),
    ]);
    assert_eq!(r.code.unwrap(), code(exit_codes::OK), "{}", r.err);
    assert!(r
        .out
        .starts_with(&format!("wrote {}: 2 cluster(s)", output.display())));
    let yaml = std::fs::read_to_string(&output).unwrap();
    assert!(yaml.contains(&format!(
        "#   envoy -c {} --concurrency 4\n",
        output.display()
    )));
    let b = parse(&yaml);
    assert_eq!(
        str_at(
            &b,
            "static_resources.listeners.0.address.socket_address.address"
        ),
        "::1"
    );
}

#[test]
fn envoy_refuses_invalid_configs_without_output() {
    let dir = scratch_dir("envoy-invalid");
    let config = write(&dir, "c.yaml", INVALID);
    let output = dir.join("envoy.yaml");
    let r = run(&["envoy", &config, "-o", output.to_str().unwrap()]);
    assert_eq!(r.code.unwrap(), code(exit_codes::CONFIG_INVALID));
    assert!(r.out.is_empty());
    assert!(!output.exists());
    assert_eq!(
        r.err.lines().filter(|l| l.starts_with("error: ")).count(),
        2
    );

    let r = run(&["envoy", &config]);
    assert_eq!(r.code.unwrap(), code(exit_codes::CONFIG_INVALID));
    assert!(r.out.is_empty(), "no partial bootstrap on stdout");
}

#[test]
fn envoy_no_env_cannot_render_an_api_base_from_the_environment() {
    let dir = scratch_dir("envoy-base-env");
    let config = write(&dir, "c.yaml", BASE_FROM_ENV);
    let r = run(&["envoy", &config, "--no-env"]);
    assert_eq!(r.code.unwrap(), code(exit_codes::CONFIG_INVALID));
    assert!(r.out.is_empty());
    assert!(
        r.err.contains(
            "error: model_list[0].litellm_params.api_base: comes from os.environ/DETOUR_TEST_VARIABLE_THAT_IS_NEVER_SET"
        ),
        "{}",
        r.err
    );
}

#[test]
fn envoy_will_not_overwrite_its_config() {
    let dir = scratch_dir("envoy-clobber");
    let config = write(&dir, "c.yaml", HTTP_ONLY);
    let r = run(&["envoy", &config, "-o", &config]);
    assert_eq!(r.code.unwrap_err().exit_status(), exit_codes::USAGE);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), HTTP_ONLY);
}

/// The binary's exit statuses, as scripts see them.
#[test]
fn binary_exit_statuses() {
    let dir = scratch_dir("binary");
    let good = write(&dir, "good.yaml", HTTP_ONLY);
    let bad = write(&dir, "bad.yaml", INVALID);
    let missing = dir.join("missing.yaml");
    let cases: [(&[&str], u8); 7] = [
        (&["--help"], exit_codes::OK),
        (&["validate", &good], exit_codes::OK),
        (&["validate"], exit_codes::USAGE),
        (
            &["envoy", &good, "--listen", "localhost:80"],
            exit_codes::USAGE,
        ),
        (
            &["envoy", &good, "--concurrency-hint", "0"],
            exit_codes::USAGE,
        ),
        (&["validate", &bad], exit_codes::CONFIG_INVALID),
        (&["validate", missing.to_str().unwrap()], exit_codes::IO),
    ];
    for (args, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_detour"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(i32::from(expected)),
            "detour {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
