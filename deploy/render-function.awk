# Renders one deploy target's copy of a function config (function.yaml, deploy/function-cpu.yaml).
# Used by deploy.sh: awk -v mode=kube|local -v secret=NAME -v port=N -f this OVERRIDES CONFIG
#
# OVERRIDES: NAME=VALUE lines. An env entry of that name gets the value (single-quoted YAML);
# names the config lacks are appended to spec.env. So every name appears once: no duplicate env
# entries whose precedence would depend on the platform.
# mode=kube:  every secretKeyRef's Secret name becomes `secret` (when set).
# mode=local: the local platform cannot read Kubernetes Secrets, so each valueFrom entry becomes
#             a plain value: its override if there is one, else empty (unset for the function).
# port:       the host port of the HTTP trigger (local platform), added next to maxRequestBodySize.
# Env entries must be block style (`- name: X` then `value:` / one-line `valueFrom: {...}`).
# Exit 3: no spec.env block; exit 4: a port was asked for but there is no HTTP trigger body limit.

function quote(v) {
    gsub(/'/, "''", v)
    return "'" v "'"
}

function indent_of(s) {
    match(s, /^ */)
    return RLENGTH
}

function flush(    j, k) {
    for (j = 1; j <= n; j++) {
        k = order[j]
        if (!(k in used)) {
            print item_pad "- name: " k
            print item_pad "  value: " quote(over[k])
            used[k] = 1
        }
    }
}

FILENAME == ARGV[1] {
    eq = index($0, "=")
    if (eq > 1) {
        name = substr($0, 1, eq - 1)
        over[name] = substr($0, eq + 1)
        order[++n] = name
    }
    next
}

{
    line = $0
    if (!found_env && line ~ /^ *env:[ \t]*(#.*)?$/) {
        found_env = 1
        in_env = 1
        env_indent = indent_of(line)
        item_pad = sprintf("%" (env_indent + 2) "s", "")
        print line
        next
    }
    if (in_env) {
        if (line ~ /^[ \t]*(#.*)?$/) {
            print line
            next
        }
        if (indent_of(line) <= env_indent && line !~ /^ *- /) {
            flush()
            in_env = 0
        } else if (line ~ /^ *- name:/) {
            cur = line
            sub(/^ *- name: */, "", cur)
            sub(/[ \t]+#.*$/, "", cur)
            gsub(/["' \t]/, "", cur)
            item_pad = substr(line, 1, index(line, "-") - 1)
            print line
            next
        } else if (line ~ /^ *value(From)?:/) {
            pad = substr(line, 1, indent_of(line))
            if (cur in over) {
                print pad "value: " quote(over[cur])
                used[cur] = 1
                next
            }
            if (line ~ /^ *valueFrom:/) {
                if (mode == "local") {
                    print pad "value: ''"
                    next
                }
                if (secret != "") {
                    sub(/secretKeyRef: *[{] *name: *[^,} ]+/, "secretKeyRef: {name: " secret, line)
                }
            }
            print line
            next
        }
    }
    if (port != "" && line ~ /^ *maxRequestBodySize:/) {
        print line
        print substr(line, 1, indent_of(line)) "port: " port
        port_done = 1
        next
    }
    print line
}

END {
    if (in_env) {
        flush()
    }
    if (!found_env) {
        exit 3
    }
    if (port != "" && !port_done) {
        exit 4
    }
}
