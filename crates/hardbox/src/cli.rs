//! The command line, described and nothing more: actions live in `cmd`, defaults in `settings`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "hardbox",
    version,
    about = "Hardened images and agent sandboxes",
    propagate_version = true
)]
pub struct Cli {
    /// Store root (default: $HARDBOX_ROOT, /var/lib/hardbox as root, else $XDG_DATA_HOME/hardbox)
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Manage images in the local store
    #[command(subcommand)]
    Image(ImageCommand),
    /// Store maintenance
    #[command(subcommand)]
    System(SystemCommand),
    /// Print version information
    Version(JsonFlag),
    /// Run a command in a sandbox
    Run(Box<RunArgs>),
    /// Report which isolation layers this host can enforce, and why not
    Doctor(DoctorArgs),
    /// Show the effective sandbox policy
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Signing keys for attestations (SBOMs, provenance)
    #[command(subcommand)]
    Key(KeyCommand),
    /// Build a hardened image from a spec (YAML) and Debian packages
    Build(Box<BuildArgs>),
    /// Resolve a spec's packages and write its lockfile
    Lock(LockArgs),
    /// Print an image's SBOM (the attached one, else one made from its dpkg database)
    Sbom(SbomArgs),
    /// Check an image's signed attestations: provenance and SBOMs
    Verify(VerifyArgs),
    /// Host-side secrets that sandboxes see only as placeholders
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Create and start a long-lived sandbox; run commands in it with `exec`
    Create(Box<CreateArgs>),
    /// Run a command in a running sandbox
    Exec(ExecArgs),
    /// List sandboxes
    #[command(visible_alias = "ps")]
    Ls(SandboxLsArgs),
    /// Stop sandboxes (their files are kept; `start` runs them again)
    Stop(StopArgs),
    /// Start stopped sandboxes again, with the files they had
    Start(SandboxNames),
    /// Remove sandboxes and their files
    Rm(SandboxRmArgs),
    /// Print the output of a sandbox's main command
    Logs(LogsArgs),
    /// Copy files between a running sandbox and the host: `cp SRC NAME:DST` or `cp NAME:SRC DST`
    Cp(CpArgs),
    /// List the files a sandbox added, changed and deleted
    Diff(DiffArgs),
    /// List a sandbox's published ports
    Port(SandboxName),
    /// Print a sandbox's events (exec, exit, files, network, lifecycle)
    Events(EventsArgs),
    /// Save a sandbox as an OCI image: the base image's layers, then its changes
    Save(SaveArgs),
    /// Supervise one sandbox (started by `create` and `start`)
    #[command(hide = true)]
    Supervise(SuperviseArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the sandbox (default: a generated one)
    #[arg(long)]
    pub name: Option<String>,
    /// Export the sandbox's events as OTLP/HTTP logs to this collector URL
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Record commands' arguments as `<redacted>` in exec events
    #[arg(long)]
    pub redact_args: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Sandbox name or id
    pub sandbox: String,
    /// Give the command a terminal
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Keep stdin attached (with -t: forwarded to the terminal)
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the host's value)
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the sandbox
    #[arg(long = "workdir", short = 'w', value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// User to run as inside the sandbox: UID[:GID]
    #[arg(long, short = 'u', value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SandboxLsArgs {
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Print only ids
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct SandboxName {
    /// Sandbox name or id
    pub sandbox: String,
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SandboxNames {
    /// Sandbox names or ids
    #[arg(required = true)]
    pub sandboxes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Sandbox names or ids
    #[arg(required = true)]
    pub sandboxes: Vec<String>,
    /// Seconds to wait after SIGTERM before SIGKILL
    #[arg(long, short = 't', default_value_t = 10)]
    pub time: u64,
}

#[derive(Debug, Args)]
pub struct SandboxRmArgs {
    /// Sandbox names or ids
    #[arg(required = true)]
    pub sandboxes: Vec<String>,
    /// Stop running sandboxes first (with SIGKILL)
    #[arg(long, short = 'f')]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Sandbox name or id
    pub sandbox: String,
    /// Keep printing new output until the sandbox stops
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Source: a host path, or NAME:PATH in a sandbox
    pub source: String,
    /// Destination: a host path, or NAME:PATH in a sandbox
    pub destination: String,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Sandbox name or id
    pub sandbox: String,
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Sandbox name or id
    pub sandbox: String,
    /// Keep printing new events until interrupted or the sandbox is removed
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Print each event as a JSON line
    #[arg(long)]
    pub json: bool,
    /// Only events from this point: a sequence number, an RFC 3339 time, or a duration ago
    /// (like 10m)
    #[arg(long, value_name = "SEQ|TIME|DURATION")]
    pub since: Option<String>,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Sandbox name or id
    pub sandbox: String,
    /// Name of the new image in the store
    pub tag: String,
    /// Also write the image to FILE
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Format of --output
    #[arg(long, value_enum, default_value = "oci-archive")]
    pub format: SaveFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveFormat {
    OciArchive,
    DockerArchive,
}

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// The sandbox's id
    pub id: String,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum SecretCommand {
    /// Store a secret: its value from stdin (one trailing newline dropped) or --from-file
    Set(SecretSetArgs),
    /// List stored secrets by name (never their values)
    #[command(visible_alias = "list")]
    Ls(JsonFlag),
    /// Remove stored secrets
    #[command(visible_alias = "remove")]
    Rm(SecretRmArgs),
}

#[derive(Debug, Args)]
pub struct SecretSetArgs {
    /// The secret's name, as policy files bind it (`[secrets.NAME]`)
    pub name: String,
    /// Read the value from this file instead of stdin (taken byte for byte)
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SecretRmArgs {
    /// Names of the secrets to remove
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum KeyCommand {
    /// Generate a signing key pair: PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (SPKI PEM)
    Generate(KeyGenerateArgs),
}

/// A signature algorithm for `key generate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyAlgorithm {
    Ed25519,
    EcdsaP256,
}

#[derive(Debug, Args)]
pub struct KeyGenerateArgs {
    /// Path prefix of the two files to write
    #[arg(default_value = "hardbox")]
    pub prefix: PathBuf,
    /// Signature algorithm
    #[arg(long, value_enum, default_value = "ed25519")]
    pub algorithm: KeyAlgorithm,
    /// Replace existing files
    #[arg(long)]
    pub force: bool,
    /// Print the key id and paths as JSON
    #[arg(long)]
    pub json: bool,
}

/// Where packages come from, for `build` and `lock`.
#[derive(Debug, Args)]
pub struct PackageSourceArgs {
    /// Use only the download cache (no network)
    #[arg(long)]
    pub offline: bool,
    /// Platform to build for, e.g. linux/arm64 (default: the spec's first, else this host's)
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The image spec (YAML)
    pub spec: PathBuf,
    /// Name to give the image; repeatable (default: the spec's tags)
    #[arg(long = "tag", short = 't', value_name = "NAME")]
    pub tags: Vec<String>,
    /// Install exactly the packages of a lockfile (default: hardbox.lock.json next to the spec)
    #[arg(long, value_name = "LOCKFILE", num_args = 0..=1)]
    pub locked: Option<Option<PathBuf>>,
    /// Sign SLSA provenance and SBOM attestations with this private key (PKCS#8 PEM, as
    /// 'hardbox key generate' writes)
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    /// SOURCE_DATE_EPOCH when the spec has no dates (default: $SOURCE_DATE_EPOCH, else the
    /// newest Date of the repositories' Release files)
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<u64>,
    #[command(flatten)]
    pub sources: PackageSourceArgs,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// The image spec (YAML)
    pub spec: PathBuf,
    /// Where to write the lockfile (default: hardbox.lock.json next to the spec)
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub sources: PackageSourceArgs,
}

/// An SBOM format for `sbom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SbomFormatArg {
    SpdxJson,
    CyclonedxJson,
}

#[derive(Debug, Args)]
pub struct SbomArgs {
    /// Image name or digest
    pub image: String,
    /// Document format
    #[arg(long, value_enum, default_value = "spdx-json")]
    pub format: SbomFormatArg,
    /// Write the document to FILE instead of stdout
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Image name or digest
    pub image: String,
    /// Public key (SPKI PEM) trusted to sign the attestations; repeatable
    #[arg(long, value_name = "PUB", required = true)]
    pub key: Vec<PathBuf>,
    /// Print the checks as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum PolicyCommand {
    /// Print the effective policy: the built-in default, then the policy file
    Show(PolicyShowArgs),
}

#[derive(Debug, Args)]
pub struct PolicyShowArgs {
    /// Policy file (TOML) layered over the built-in default
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Print the policy as JSON on stdout (default: TOML)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// `run --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkModeArg {
    None,
    Proxy,
    Host,
}

/// An isolation layer `--dangerously-skip` can turn off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SkippableLayer {
    Landlock,
    Seccomp,
    Cgroups,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Image whose filesystem becomes the sandbox's root (or use --host)
    #[arg(required_unless_present = "host", conflicts_with = "host")]
    pub image: Option<String>,
    /// Use the host's root filesystem, read-only
    #[arg(long)]
    pub host: bool,
    /// Directory mounted read-write at the same path, and the default working directory
    /// (default: the current directory)
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Bind a host path: HOST:GUEST[:ro|rw] (default rw)
    #[arg(long = "volume", short = 'v', value_name = "HOST:GUEST[:ro|rw]")]
    pub volumes: Vec<String>,
    /// Working directory inside the sandbox (default: the workspace)
    #[arg(long = "workdir", short = 'w', value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the host's value)
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines, # comments)
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Hostname inside the sandbox
    #[arg(long, default_value = "hardbox")]
    pub hostname: String,
    /// Mount an empty writable tmpfs at PATH
    #[arg(long, value_name = "PATH")]
    pub tmpfs: Vec<PathBuf>,
    /// User to run as inside the sandbox: UID[:GID] (with an image, names from its /etc/passwd
    /// and /etc/group too)
    #[arg(long, short = 'u', value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Turn off an isolation layer (unsafe; for hosts that cannot enforce it)
    #[arg(long, value_enum, value_name = "LAYER")]
    pub dangerously_skip: Vec<SkippableLayer>,
    /// Policy file (TOML) layered over the built-in default; flags win over it
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Memory limit, like 512m or 2g (policy limits.memory)
    #[arg(long, short = 'm', value_name = "SIZE")]
    pub memory: Option<String>,
    /// Largest number of processes and threads (policy limits.pids)
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<u64>,
    /// CPU limit in CPUs, fractions allowed, like 1.5 (policy limits.cpus)
    #[arg(long, value_name = "CPUS")]
    pub cpus: Option<f64>,
    /// Kill the sandbox after this long, like 30s or 5m; exits 124 (policy limits.timeout)
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Network: none (loopback only, the default), proxy (through hardbox's egress proxy, which
    /// applies the allow and deny rules), host (refused)
    #[arg(long, value_enum, value_name = "MODE")]
    pub network: Option<NetworkModeArg>,
    /// Let the proxy through to HOST (`api.example.com`, `*.example.org`, optionally `:PORT`);
    /// implies --network proxy
    #[arg(long, value_name = "HOST")]
    pub allow_host: Vec<String>,
    /// Refuse HOST whatever else allows it
    #[arg(long, value_name = "HOST")]
    pub deny_host: Vec<String>,
    /// Let the proxy through to an address range (private ranges are refused otherwise)
    #[arg(long, value_name = "CIDR")]
    pub allow_cidr: Vec<String>,
    /// Let other TCP through to HOST:PORT (e.g. ssh to a git host)
    #[arg(long, value_name = "HOST:PORT")]
    pub allow_tcp: Vec<String>,
    /// Refuse TLS without a server name and HTTP without a Host header
    #[arg(long)]
    pub strict_hostname: bool,
    /// Publish a port of the sandbox on the host: [IP:]HOSTPORT:PORT (default IP 127.0.0.1)
    #[arg(long = "publish", short = 'p', value_name = "[IP:]HOSTPORT:PORT")]
    pub publish: Vec<String>,
    /// Give the command a terminal (a pseudo-terminal of its own; window size changes follow
    /// this terminal's)
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Keep stdin attached: with -t, what is typed or piped is forwarded to the command's
    /// terminal (without -t the command always reads this stdin directly)
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// With an image: no writable layer, the image's root filesystem is read-only
    #[arg(long, conflicts_with = "host")]
    pub read_only: bool,
    /// The command and its arguments (with an image: replaces its Cmd; default: its Cmd)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ImageCommand {
    /// Import an OCI image layout directory, an OCI archive or a docker-archive tar
    Import(ImportArgs),
    /// Export an image as an OCI layout directory, OCI archive or docker-archive tar
    Export(ExportArgs),
    /// List images
    #[command(visible_alias = "list")]
    Ls(JsonFlag),
    /// Show an image's manifest, config and layers
    Inspect(InspectArgs),
    /// Give an image another name
    Tag(TagArgs),
    /// Remove image names, and the blobs no other image uses
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Unpack an image's layers into a new directory
    Unpack(UnpackArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// An OCI layout directory, an OCI archive (.tar) or a docker-archive (.tar)
    pub source: PathBuf,
    /// Name to give the image (default: the names recorded in the source)
    #[arg(long, short = 't')]
    pub tag: Option<String>,
    /// Platform to pick from a multi-platform index (default: this host's), e.g. linux/arm64
    #[arg(long)]
    pub platform: Option<String>,
    /// Print the imported images as JSON
    #[arg(long)]
    pub json: bool,
    /// Also unpack the image into DIR (must not exist, or be empty), in the same pass over each
    /// layer; the source must hold one image (pick it with --platform)
    #[arg(long, value_name = "DIR")]
    pub unpack: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    OciDir,
    OciArchive,
    DockerArchive,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Image name or digest
    pub reference: String,
    #[arg(long, value_enum, default_value = "oci-archive")]
    pub format: ExportFormat,
    /// Where to write (must not exist)
    #[arg(long, short = 'o')]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Image name or digest
    pub reference: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// Existing image name or digest
    pub source: String,
    /// New name
    pub target: String,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Image names or digests
    #[arg(required = true)]
    pub references: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UnpackArgs {
    /// Image name or digest
    pub reference: String,
    /// Directory to create with the image's filesystem (must not exist, or be empty)
    pub dir: PathBuf,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Limits that stop decompression and archive bombs.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Largest total size of files an image may unpack to, in bytes
    #[arg(long, env = "HARDBOX_MAX_UNPACK_BYTES", default_value_t = 64 << 30)]
    pub max_unpack_bytes: u64,
    /// Largest number of entries an image may hold
    #[arg(long, env = "HARDBOX_MAX_UNPACK_ENTRIES", default_value_t = 4_000_000)]
    pub max_unpack_entries: u64,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum SystemCommand {
    /// Remove blobs no image refers to, and leftovers of interrupted commands
    Gc(JsonFlag),
    /// Verify every blob and reference in the store; exits non-zero on damage
    Fsck(JsonFlag),
}
