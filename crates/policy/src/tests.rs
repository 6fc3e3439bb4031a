//! Data-driven tests of parsing, merging and printing policies.

#![allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]

use super::*;

/// Parses `input` and compares the outcome with `expected`: `Ok(f)` where `f` edits the default
/// policy into the expected one, or `Err(message)` with the expected error message.
fn check(input: &str, expected: Result<fn(&mut Policy), &str>) {
    let parsed = Policy::from_toml(input);
    match expected {
        Ok(edit) => {
            let mut want = Policy::default();
            edit(&mut want);
            match parsed {
                Ok(policy) => assert_eq!(policy, want, "input:\n{input}"),
                Err(error) => panic!("input:\n{input}\nfailed: {error}"),
            }
        }
        Err(message) => match parsed {
            Err(error) => assert_eq!(error.to_string(), message, "input:\n{input}"),
            Ok(policy) => panic!("input:\n{input}\nparsed to {policy:?}"),
        },
    }
}

fn path(text: &str) -> PolicyPath {
    match PolicyPath::new(text) {
        Ok(path) => path,
        Err(error) => panic!("{error}"),
    }
}

#[test]
fn empty_file_is_the_default() {
    check("", Ok(|_| {}));
    check("[filesystem]\n[limits]\n", Ok(|_| {}));
}

#[test]
fn keys_replace_defaults() {
    check(
        "[filesystem]\nwrite = [\"/data\"]\n",
        Ok(|policy| policy.filesystem.write = vec![path("/data")]),
    );
    check(
        "[limits]\nmemory = \"512m\"\ntimeout = \"5m\"\ncpus = 1\n",
        Ok(|policy| {
            policy.limits.memory = ByteSize::new(512 << 20).unwrap();
            policy.limits.timeout =
                HumanDuration::new(std::time::Duration::from_secs(300)).unwrap();
            policy.limits.cpus = Cpus::new(1.0).unwrap();
        }),
    );
    check(
        "[environment]\nallow = [\"PATH\"]\nset = { EDITOR = \"vi\" }\n",
        Ok(|policy| {
            policy.environment.allow = vec![EnvPattern::new("PATH").unwrap()];
            policy
                .environment
                .set
                .insert(EnvName::new("EDITOR").unwrap(), "vi".to_owned());
        }),
    );
    check(
        "[network]\nmode = \"proxy\"\n[seccomp]\nallow = [\"ptrace\", \"ptrace\"]\n",
        Ok(|policy| {
            policy.network.mode = NetworkMode::Proxy;
            policy.seccomp.allow = vec![SyscallName::new("ptrace").unwrap()];
        }),
    );
    check(
        "[network]\nmode = \"host\"\ndangerously_host_network = true\n",
        Ok(|policy| {
            policy.network.mode = NetworkMode::Host;
            policy.network.dangerously_host_network = true;
        }),
    );
    check(
        "[sandbox]\ndangerously_skip = [\"landlock\", \"cgroups\"]\n",
        Ok(|policy| {
            policy.sandbox.dangerously_skip = vec![Layer::Landlock, Layer::Cgroups];
        }),
    );
}

#[test]
fn hide_adds_to_the_defaults_and_unhide_takes_defaults_back() {
    check(
        "[filesystem]\nhide = [\"$WORKSPACE/.env\", \"~/.ssh\"]\n",
        Ok(|policy| policy.filesystem.hide.push(path("$WORKSPACE/.env"))),
    );
    check(
        "[filesystem]\nunhide = [\"~/.kube\"]\n",
        Ok(|policy| {
            policy
                .filesystem
                .hide
                .retain(|hidden| hidden.as_str() != "~/.kube");
            policy.filesystem.unhide = vec![path("~/.kube")];
        }),
    );
    // Deny wins: a path hidden explicitly stays hidden.
    check(
        "[filesystem]\nhide = [\"~/.kube\"]\nunhide = [\"~/.kube\"]\n",
        Ok(|policy| {
            policy
                .filesystem
                .hide
                .retain(|hidden| hidden.as_str() != "~/.kube");
            policy.filesystem.hide.push(path("~/.kube"));
            policy.filesystem.unhide = vec![path("~/.kube")];
        }),
    );
}

#[test]
fn bad_input_names_the_line_and_the_problem() {
    check(
        "[filesystem]\nread = [\"/\"]\nwrtie = [\"/tmp\"]\n",
        Err("invalid policy at line 3 (wrtie = [\"/tmp\"]): unknown field `wrtie`, expected one of `read`, `write`, `hide`, `unhide`"),
    );
    check(
        "[limits]\nmemory = \"2x\"\n",
        Err("invalid policy at line 2 (memory = \"2x\"): invalid size \"2x\": expected a whole number with an optional unit k, m, g or t (powers of 1024), such as \"512m\" or \"2g\""),
    );
    check(
        "[limits]\ntimeout = \"30\"\n",
        Err("invalid policy at line 2 (timeout = \"30\"): invalid duration \"30\": expected whole numbers with units ms, s, m, h or d, such as \"30s\", \"5m\" or \"1h30m\""),
    );
    check(
        "[limits]\npids = 0\n",
        Err("invalid policy at line 2 (pids = 0): invalid count \"0\": it must be positive"),
    );
    check(
        "[limits]\ncpus = -1.5\n",
        Err("invalid policy at line 2 (cpus = -1.5): invalid cpus \"-1.5\": it must be positive"),
    );
    check(
        "[limits]\nmemory = \"0g\"\n",
        Err("invalid policy at line 2 (memory = \"0g\"): invalid size \"0g\": it must be positive"),
    );
    check(
        "[filesystem]\nwrite = [\"/tmp\", \"build\"]\n",
        Err("invalid policy at line 2 (write = [\"/tmp\", \"build\"]): invalid path \"build\": policy paths must be absolute or start with ~, $HOME or $WORKSPACE"),
    );
    check(
        "[sandbox]\ndangerously_skip = [\"apparmor\"]\n",
        Err("invalid policy at line 2 (dangerously_skip = [\"apparmor\"]): unknown variant `apparmor`, expected one of `landlock`, `seccomp`, `cgroups`, `userns`"),
    );
    check(
        "[network]\nmode = \"bridge\"\n",
        Err("invalid policy at line 2 (mode = \"bridge\"): unknown variant `bridge`, expected one of `none`, `proxy`, `host`"),
    );
    check(
        "[environment]\nset = { \"A=B\" = \"x\" }\n",
        Err("invalid policy at line 2 (set = { \"A=B\" = \"x\" }): invalid environment variable name \"A=B\": use letters, digits and underscores, not starting with a digit"),
    );
    check(
        "[dangerously_skip]\n",
        Err("invalid policy at line 1 ([dangerously_skip]): unknown field `dangerously_skip`, expected one of `filesystem`, `environment`, `limits`, `seccomp`, `network`, `secrets`, `sandbox`"),
    );
    check(
        "[limits\n",
        Err("invalid policy at line 1 ([limits): unclosed table, expected `]`"),
    );
}

#[test]
fn rules_across_keys() {
    check("[network]\nmode = \"host\"\n", Err("invalid policy"));
    let error = Policy::from_toml("[network]\nmode = \"host\"\n");
    assert_eq!(
        error,
        Err(PolicyError::Invalid(
            ValidationError::HostNetworkNotConfirmed
        ))
    );
    let error = Policy::from_toml("[filesystem]\nunhide = [\"/etc/passwd\"]\n");
    match error {
        Err(PolicyError::Invalid(error)) => assert_eq!(
            error.to_string(),
            "filesystem.unhide lists /etc/passwd, which is not hidden by default (default hidden paths: ~/.ssh, ~/.aws, ~/.config/gcloud, ~/.azure, ~/.kube, ~/.docker/config.json, ~/.netrc, ~/.gnupg, /etc/shadow, /etc/gshadow, /root)"
        ),
        other => panic!("{other:?}"),
    }
}

const DEFAULT_TOML: &str = r#"[filesystem]
read = ["/"]
write = ["$WORKSPACE", "/tmp"]
hide = ["~/.ssh", "~/.aws", "~/.config/gcloud", "~/.azure", "~/.kube", "~/.docker/config.json", "~/.netrc", "~/.gnupg", "/etc/shadow", "/etc/gshadow", "/root"]
unhide = []

[environment]
allow = ["PATH", "TERM", "LANG", "LC_*", "HOME", "USER", "TZ"]

[environment.set]

[limits]
memory = "2g"
cpus = 2.0
pids = 1024
timeout = "30m"
nofile = 4096

[seccomp]
allow = []

[network]
mode = "none"
dangerously_host_network = false
preset = "none"
allow_hosts = []
deny_hosts = []
allow_cidrs = []
allow_tcp = []
strict_hostname = false
upstream_ca_files = []

[network.hosts]

[secrets]

[sandbox]
dangerously_skip = []
"#;

#[test]
fn default_policy_toml_is_pinned() {
    assert_eq!(Policy::default().to_toml(), DEFAULT_TOML);
    assert_eq!(Policy::from_toml(DEFAULT_TOML), Ok(Policy::default()));
}

#[test]
fn to_toml_round_trips() {
    let inputs = [
        "[filesystem]\nhide = [\"$WORKSPACE/.env\"]\nunhide = [\"~/.kube\", \"/root\"]\n",
        "[environment]\nset = { EDITOR = \"vi\", PAGER = \"less\" }\n[limits]\ntimeout = \"1h30m\"\ncpus = 0.5\nmemory = \"1536m\"\n",
        "[network]\nmode = \"host\"\ndangerously_host_network = true\n[sandbox]\ndangerously_skip = [\"userns\"]\n",
    ];
    for input in inputs {
        let policy = match Policy::from_toml(input) {
            Ok(policy) => policy,
            Err(error) => panic!("{input}: {error}"),
        };
        let printed = policy.to_toml();
        assert_eq!(
            Policy::from_toml(&printed),
            Ok(policy),
            "printed:\n{printed}"
        );
    }
}

#[test]
fn overrides_add_to_lists_and_replace_scalars() {
    let file = "[filesystem]\nwrite = [\"/data\"]\n[limits]\nmemory = \"4g\"\npids = 10\n";
    let policy = match Policy::from_toml(file) {
        Ok(policy) => policy,
        Err(error) => panic!("{error}"),
    };
    let overrides = PolicyOverrides {
        write: vec![path("$WORKSPACE"), path("/data")],
        hide: vec![path("/srv/secrets")],
        unhide: vec![path("~/.aws")],
        env_set: [(EnvName::new("CI").unwrap(), "1".to_owned())].into(),
        memory: Some(ByteSize::new(1 << 30).unwrap()),
        seccomp_allow: vec![SyscallName::new("ptrace").unwrap()],
        network: Some(NetworkMode::Proxy),
        dangerously_skip: vec![Layer::Seccomp],
        ..PolicyOverrides::default()
    };
    let merged = match policy.merge(&overrides) {
        Ok(merged) => merged,
        Err(error) => panic!("{error}"),
    };
    let mut want = Policy::default();
    want.filesystem.write = vec![path("/data"), path("$WORKSPACE")];
    want.filesystem
        .hide
        .retain(|hidden| hidden.as_str() != "~/.aws");
    want.filesystem.hide.push(path("/srv/secrets"));
    want.filesystem.unhide = vec![path("~/.aws")];
    want.environment
        .set
        .insert(EnvName::new("CI").unwrap(), "1".to_owned());
    want.limits.memory = ByteSize::new(1 << 30).unwrap();
    want.limits.pids = Count::new(10).unwrap();
    want.seccomp.allow = vec![SyscallName::new("ptrace").unwrap()];
    want.network.mode = NetworkMode::Proxy;
    want.sandbox.dangerously_skip = vec![Layer::Seccomp];
    assert_eq!(merged, want);
    assert!(merged.skips(Layer::Seccomp));
    assert!(!merged.skips(Layer::Landlock));
}

#[test]
fn overrides_are_validated() {
    let host = PolicyOverrides {
        network: Some(NetworkMode::Host),
        ..PolicyOverrides::default()
    };
    assert_eq!(
        Policy::default().merge(&host),
        Err(ValidationError::HostNetworkNotConfirmed)
    );
    let confirmed = PolicyOverrides {
        dangerously_host_network: true,
        ..host
    };
    assert!(Policy::default().merge(&confirmed).is_ok());
    let unhide = PolicyOverrides {
        unhide: vec![path("/etc")],
        ..PolicyOverrides::default()
    };
    assert!(matches!(
        Policy::default().merge(&unhide),
        Err(ValidationError::UnhideNotDefault { .. })
    ));
}

#[test]
fn environment_allows_by_pattern() {
    let environment = Environment::default();
    assert!(environment.allows("PATH"));
    assert!(environment.allows("LC_ALL"));
    assert!(!environment.allows("AWS_SECRET_ACCESS_KEY"));
    assert!(!environment.allows("PATHEXT"));
}

#[test]
fn filesystem_expands_with_the_given_variables() {
    let variables = PathVariables {
        home: Some(std::path::Path::new("/home/ada")),
        workspace: Some(std::path::Path::new("/src/app")),
    };
    let expanded = Policy::default().filesystem.expand(variables).unwrap();
    let strings = |list: &[std::path::PathBuf]| -> Vec<String> {
        list.iter().map(|path| path.display().to_string()).collect()
    };
    assert_eq!(strings(&expanded.read), ["/"]);
    assert_eq!(strings(&expanded.write), ["/src/app", "/tmp"]);
    assert_eq!(
        expanded.hide.first().map(|path| path.display().to_string()),
        Some("/home/ada/.ssh".to_owned())
    );
    let no_workspace = PathVariables {
        workspace: None,
        ..variables
    };
    assert!(matches!(
        Policy::default().filesystem.expand(no_workspace),
        Err(ExpandError::NoWorkspace { .. })
    ));
}

#[test]
fn network_rules_and_secrets_parse_and_flags_add_to_them() {
    let policy = Policy::from_toml(
        r#"
[network]
mode = "proxy"
preset = "dev"
allow_hosts = ["api.example.com", "*.example.org:443"]
deny_hosts = ["bad.example.com"]
allow_tcp = ["git.example.com:22"]

[secrets.EXAMPLE_KEY]
hosts = ["api.example.com"]
header = "x-api-key"
"#,
    )
    .unwrap();
    assert_eq!(policy.network.mode, NetworkMode::Proxy);
    assert_eq!(policy.network.preset, NetworkPreset::Dev);
    assert_eq!(policy.secrets["EXAMPLE_KEY"].hosts, ["api.example.com"]);
    assert_eq!(
        policy.secrets["EXAMPLE_KEY"].header.as_deref(),
        Some("x-api-key")
    );
    let merged = policy
        .merge(&PolicyOverrides {
            allow_hosts: vec!["api.example.com".into(), "more.example.net".into()],
            strict_hostname: true,
            ..PolicyOverrides::default()
        })
        .unwrap();
    assert_eq!(
        merged.network.allow_hosts,
        ["api.example.com", "*.example.org:443", "more.example.net"]
    );
    assert!(merged.network.strict_hostname);
    assert_eq!(Policy::from_toml(&merged.to_toml()), Ok(merged));
}

#[test]
fn a_secret_without_hosts_or_with_a_bad_name_is_refused() {
    let error = Policy::from_toml("[secrets.KEY]\nheader = \"x\"\n").unwrap_err();
    assert!(error.to_string().contains("invalid policy"), "{error}");
    assert!(
        matches!(
            error,
            PolicyError::Invalid(ValidationError::SecretWithoutHosts { ref name }) if name == "KEY"
        ),
        "{error:?}"
    );
    let error = Policy::from_toml("[secrets.\"a/b\"]\nhosts = [\"x.example\"]\n").unwrap_err();
    assert!(
        matches!(
            error,
            PolicyError::Invalid(ValidationError::SecretName { .. })
        ),
        "{error:?}"
    );
}

#[test]
fn upstream_ca_files_and_pinned_hosts_parse_and_print_back() {
    check(
        "[network]\nupstream_ca_files = [\"/etc/corp/ca.pem\"]\n[network.hosts]\n\"API.Example.test.\" = \"127.0.0.1\"\n\"v6.example.test\" = \"::1\"\n",
        Ok(|policy| {
            policy.network.upstream_ca_files = vec![HostFile::new("/etc/corp/ca.pem").unwrap()];
            policy.network.hosts.insert(
                HostName::new("api.example.test").unwrap(),
                "127.0.0.1".parse().unwrap(),
            );
            policy.network.hosts.insert(
                HostName::new("v6.example.test").unwrap(),
                "::1".parse().unwrap(),
            );
        }),
    );
    let policy = Policy::from_toml(
        "[network]\nupstream_ca_files = [\"/ca.pem\"]\nhosts = { \"a.example.test\" = \"10.0.0.1\" }\n",
    )
    .unwrap();
    assert_eq!(
        policy.network.hosts[&HostName::new("a.example.test").unwrap()],
        "10.0.0.1".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(Policy::from_toml(&policy.to_toml()), Ok(policy));
}

#[test]
fn bad_upstream_ca_files_and_hosts_name_the_line() {
    check(
        "[network]\nupstream_ca_files = [\"ca.pem\"]\n",
        Err("invalid policy at line 2 (upstream_ca_files = [\"ca.pem\"]): invalid host file \"ca.pem\": an absolute path on the host"),
    );
    for (input, wanted) in [
        (
            "[network.hosts]\n\"*.example.test\" = \"127.0.0.1\"\n",
            "invalid host name \"*.example.test\"",
        ),
        (
            "[network.hosts]\n\"127.1\" = \"127.0.0.1\"\n",
            "invalid host name \"127.1\"",
        ),
        (
            "[network.hosts]\n\"a.example.test\" = \"localhost\"\n",
            "invalid IP address syntax",
        ),
    ] {
        let error = Policy::from_toml(input).unwrap_err().to_string();
        assert!(error.starts_with("invalid policy at line 2"), "{error}");
        assert!(error.contains(wanted), "{error}");
    }
}
