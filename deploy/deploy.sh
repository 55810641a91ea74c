#!/usr/bin/env bash
# Deploy the SAM2 function with nuctl, one Nuclio function per target (deploy/targets/*.env), on
# Kubernetes (--platform kube) or Nuclio's local Docker platform (--platform local).
# Secret values are never printed: on Kubernetes they stay in a Secret; locally they go only into
# a private temporary copy of the function config that is deleted on exit.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

usage() {
  cat <<'EOF'
usage: deploy/deploy.sh [options] TARGET [TARGET...]

TARGET is a target env file (deploy/targets/team-a.env) or its name (team-a). Each target is
deployed as its own function from the same image. Keys of a target file:
  FUNCTION_NAME            Nuclio function name (required), e.g. sam2-team-a
  LABEL_STUDIO_KEY_SECRET  Kubernetes Secret with the key `api-key` (default: FUNCTION_NAME)
  MIN_REPLICAS, MAX_REPLICAS
  HTTP_PORT                local platform: host port of the function (default: random)
  LOCAL_SECRETS_FILE       local platform: file with LABEL_STUDIO_API_KEY=... (and optionally
                           BASIC_AUTH_USER / BASIC_AUTH_PASS); default: those variables from
                           the environment of deploy.sh
  any function setting     LABEL_STUDIO_URL, MODEL_SIZE, DEVICE, ... (README "Environment
                           variables"); secrets are refused here.

options:
  --platform kube|local   where to deploy (default: kube)
  --registry REGISTRY     registry the cluster pulls from, e.g. registry.example.org/ml
                          (default: $SAM2_REGISTRY)
  --tag TAG               image tag (default: the package version)
  --image IMAGE           full image reference (default: REGISTRY/sam2-nuclio:TAG)
  --namespace NAMESPACE   Nuclio namespace (default: nuclio)
  --project PROJECT       Nuclio project, created if missing (default: sam2)
  --cpu                   deploy deploy/function-cpu.yaml (no GPU) instead of function.yaml
  --file CONFIG           deploy this function config instead
  --build                 docker build the image first (and push it, for kube), with every
                          target's MODEL_SIZE baked in
  --dry-run               print the commands and rendered configs, run nothing
  -h, --help              this text
EOF
}

die() {
  echo "deploy.sh: $*" >&2
  exit 1
}

platform=kube
registry=${SAM2_REGISTRY:-}
tag=""
image=""
namespace=nuclio
project=sam2
config=""
cpu=0
build=0
dry_run=0
targets=()

while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --cpu) cpu=1 ;;
    --build) build=1 ;;
    --dry-run) dry_run=1 ;;
    --platform | --registry | --tag | --image | --namespace | --project | --file)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --platform) platform=$2 ;;
        --registry) registry=$2 ;;
        --tag) tag=$2 ;;
        --image) image=$2 ;;
        --namespace) namespace=$2 ;;
        --project) project=$2 ;;
        --file) config=$2 ;;
      esac
      shift
      ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) targets+=("$1") ;;
  esac
  shift
done

case "$platform" in
  kube | local) ;;
  *) die "--platform must be kube or local, not '$platform'" ;;
esac
[ ${#targets[@]} -gt 0 ] || die "no target given (see --help; templates in deploy/targets/)"
if [ -z "$config" ]; then
  if [ "$cpu" = 1 ]; then config=$here/function-cpu.yaml; else config=$root/function.yaml; fi
fi
[ -f "$config" ] || die "function config $config not found"

if [ -z "$tag" ]; then
  tag=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$root/function/__init__.py")
fi
if [ -z "$image" ]; then
  if [ -n "$registry" ]; then
    image=${registry%/}/sam2-nuclio:$tag
  elif [ "$platform" = local ]; then
    image=sam2-nuclio:$tag
  else
    die "kube pulls the image from a registry: give --registry (or SAM2_REGISTRY) or --image"
  fi
fi

work=$(umask 077 && mktemp -d)
trap 'rm -rf "$work"' EXIT

# Prints a command (shell-quoted) in --dry-run mode, runs it otherwise. Never given secrets.
run() {
  if [ "$dry_run" = 1 ]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

is_dns_label() {
  [[ "$1" =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]]
}

is_count() {
  [[ "$1" =~ ^[0-9]+$ ]]
}

# A value from a KEY=VALUE line, without one pair of surrounding quotes.
unquote() {
  local v=$1
  if [[ "$v" =~ ^\"(.*)\"$ ]] || [[ "$v" =~ ^\'(.*)\'$ ]]; then
    v=${BASH_REMATCH[1]}
  fi
  printf '%s' "$v"
}

target_file() {
  if [ -f "$1" ]; then
    printf '%s' "$1"
  elif [ -f "$here/targets/$1.env" ]; then
    printf '%s' "$here/targets/$1.env"
  else
    die "target '$1' not found (a file, or a name in deploy/targets/)"
  fi
}

# Reads target file $1 into t_* variables; function settings go to the overrides file $2.
load_target() {
  local file=$1 overrides=$2 line key value
  t_name="" t_secret="" t_min="" t_max="" t_port="" t_secrets_file="" t_size=""
  : >"$overrides"
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%$'\r'}
    case "$line" in '' | '#'*) continue ;; esac
    [[ "$line" == *=* ]] || die "$file: expected KEY=VALUE, got a line without '='"
    key=${line%%=*}
    value=$(unquote "${line#*=}")
    [[ "$key" =~ ^[A-Z][A-Z0-9_]*$ ]] || die "$file: '$key' is not a variable name"
    case "$key" in
      LABEL_STUDIO_API_KEY | LABEL_STUDIO_ACCESS_TOKEN | BASIC_AUTH_USER | BASIC_AUTH_PASS)
        die "$file: $key is a credential; put it in the Kubernetes Secret named by LABEL_STUDIO_KEY_SECRET (local platform: LOCAL_SECRETS_FILE), not in a target file"
        ;;
      FUNCTION_NAME) t_name=$value ;;
      LABEL_STUDIO_KEY_SECRET) t_secret=$value ;;
      MIN_REPLICAS) t_min=$value ;;
      MAX_REPLICAS) t_max=$value ;;
      HTTP_PORT) t_port=$value ;;
      LOCAL_SECRETS_FILE) t_secrets_file=$value ;;
      *)
        grep -q "\"$key\"" "$root/function/settings.py" ||
          die "$file: $key is not a setting the function reads (function/settings.py KNOWN_ENV)"
        if [ "$key" = MODEL_SIZE ]; then t_size=$value; fi
        printf '%s=%s\n' "$key" "$value" >>"$overrides"
        ;;
    esac
  done <"$file"
  is_dns_label "$t_name" || die "$file: FUNCTION_NAME must be a DNS label (a-z, 0-9, -), got '$t_name'"
  t_secret=${t_secret:-$t_name}
  is_dns_label "$t_secret" || die "$file: LABEL_STUDIO_KEY_SECRET must be a Secret name, got '$t_secret'"
  for value in "$t_min" "$t_max" "$t_port"; do
    [ -z "$value" ] || is_count "$value" || die "$file: replicas and HTTP_PORT must be numbers, got '$value'"
  done
  if [ -n "$t_secrets_file" ] && [[ "$t_secrets_file" != /* ]]; then
    t_secrets_file=$(dirname "$file")/$t_secrets_file
  fi
}

# Local platform: credentials from LOCAL_SECRETS_FILE or this script's environment, appended to
# the overrides file (private temporary directory). Values are checked, never printed.
add_local_secrets() {
  local overrides=$1 name value line
  for name in LABEL_STUDIO_API_KEY LABEL_STUDIO_ACCESS_TOKEN BASIC_AUTH_USER BASIC_AUTH_PASS; do
    value=""
    if [ -n "$t_secrets_file" ]; then
      [ -r "$t_secrets_file" ] || die "LOCAL_SECRETS_FILE $t_secrets_file is not readable"
      while IFS= read -r line || [ -n "$line" ]; do
        line=${line%$'\r'}
        if [ "${line%%=*}" = "$name" ]; then value=$(unquote "${line#*=}"); fi
      done <"$t_secrets_file"
    else
      value=${!name:-}
    fi
    [ -z "$value" ] && continue
    if [ "$dry_run" = 1 ]; then value="<redacted>"; fi
    printf '%s=%s\n' "$name" "$value" >>"$overrides"
  done
  if ! grep -Eq '^(LABEL_STUDIO_API_KEY|LABEL_STUDIO_ACCESS_TOKEN)=' "$overrides"; then
    echo "deploy.sh: warning: no Label Studio key for $t_name; it cannot download task images" >&2
  fi
}

render() {
  local overrides=$1 out=$2 status=0
  awk -v mode="$platform" -v secret="$t_secret" -v port="$t_port" \
    -f "$here/render-function.awk" "$overrides" "$config" >"$out" || status=$?
  case "$status" in
    0) ;;
    3) die "$config has no spec.env block to render" ;;
    4) die "HTTP_PORT given but $config has no HTTP trigger with maxRequestBodySize" ;;
    *) die "rendering $config failed (awk exit $status)" ;;
  esac
}

ensure_project() {
  local listing
  if [ "$dry_run" = 1 ]; then
    run nuctl create project "$project" --platform "$platform" --namespace "$namespace"
    return
  fi
  listing=$(nuctl get project "$project" --platform "$platform" --namespace "$namespace")
  if [[ "$listing" == *"No projects found"* ]]; then
    run nuctl create project "$project" --platform "$platform" --namespace "$namespace"
  fi
}

check_secret() {
  [ "$platform" = kube ] && [ "$dry_run" = 0 ] || return 0
  if ! command -v kubectl >/dev/null 2>&1; then
    echo "deploy.sh: warning: kubectl not found; cannot check that Secret $t_secret exists" >&2
    return 0
  fi
  kubectl --namespace "$namespace" get secret "$t_secret" >/dev/null 2>&1 ||
    die "Secret $t_secret not found in namespace $namespace; create it first (deploy/README.md, Secrets)"
}

# Pass 1: read every target (fail before deploying anything), collect model sizes for --build.
sizes="tiny"
for target in "${targets[@]}"; do
  file=$(target_file "$target")
  load_target "$file" "$work/check.env"
  case " $sizes " in *" ${t_size:-tiny} "*) ;; *) sizes="$sizes $t_size" ;; esac
done

if [ "$build" = 1 ]; then
  run docker build --build-arg "EXTRA_MODEL_SIZES=$sizes" -t "$image" "$root"
  if [ "$platform" = kube ]; then run docker push "$image"; fi
fi

ensure_project

index=0
for target in "${targets[@]}"; do
  index=$((index + 1))
  file=$(target_file "$target")
  overrides=$work/overrides-$index.env
  rendered=$work/$index-$(basename "$config")
  load_target "$file" "$overrides"
  if [ "$platform" = local ]; then add_local_secrets "$overrides"; fi
  render "$overrides" "$rendered"
  check_secret
  args=(deploy "$t_name" --platform "$platform" --namespace "$namespace" --project-name "$project"
    --file "$rendered" --run-image "$image")
  if [ -n "$t_min" ]; then args+=(--min-replicas "$t_min"); fi
  if [ -n "$t_max" ]; then args+=(--max-replicas "$t_max"); fi
  echo "== $t_name ($(basename "$file")): $platform, namespace $namespace, image $image" >&2
  if [ "$dry_run" = 1 ]; then
    echo "--- rendered $(basename "$config") for $t_name" >&2
    cat "$rendered"
  fi
  run nuctl "${args[@]}"
done
