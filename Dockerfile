# flowctl in a container: the CLI and the daemon, with the meter's toolchain (clang compiles the
# tc-eBPF program at `meter attach`, bpftool loads it, iproute2 attaches it, nsenter enters
# namespaces, unshare gives each flow log hook a PID namespace of its own). It needs the host's network, bpffs and named namespaces, and the privileges to use
# them:
#
#   docker build -t flowctl .
#   docker run --rm --privileged --net=host -v /sys/fs/bpf:/sys/fs/bpf -v /run/netns:/run/netns \
#     flowctl meter attach -n eth0
#   docker run -d --name flowctl --restart=on-failure --privileged --net=host \
#     -v /sys/fs/bpf:/sys/fs/bpf -v /run/netns:/run/netns:rslave -v /run/flowctl:/run/flowctl \
#     -v /var/lib/flowctl:/var/lib/flowctl -v /etc/flowctl:/etc/flowctl:ro \
#     flowctl daemon -c /etc/flowctl/config.yaml
#
# /run/flowctl (what is attached) and /var/lib/flowctl (IPFIX sequence numbers) are shared with the
# host so that the CLI on either side and a restarted container see the same state. `rslave` on
# /run/netns lets the daemon see namespaces made after it started (each is a mount of its own).

# --- build: compile the TypeScript, then keep only the runtime dependencies -------------------
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json ./
# No dependency needs its install script (package.json allowScripts approves none).
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY src ./src
COPY bpf ./bpf
COPY bin ./bin
COPY misc ./misc
COPY README.md ./
RUN npx tsc -p tsconfig.json && npm prune --omit=dev --ignore-scripts

# --- runtime: node and the meter's toolchain, and what the package ships -----------------------
FROM node:20-bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang llvm libbpf-dev bpftool iproute2 util-linux \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/flowctl
# The same files `npm pack` puts in the package (test/misc/dockerfile.test.ts checks it).
COPY --from=build /src/package.json /src/README.md ./
COPY --from=build /src/bin ./bin
COPY --from=build /src/dist/src ./dist/src
COPY --from=build /src/bpf ./bpf
COPY --from=build /src/misc ./misc
COPY --from=build /src/node_modules ./node_modules
RUN ln -s /opt/flowctl/bin/run.js /usr/local/bin/flowctl \
 && flowctl --version
# The daemon's memory settings, as misc/flowctl.service sets them (the reasons are there): a young
# generation of 2 MiB, and large blocks in mappings of their own that go back to the system freed.
ENV NODE_OPTIONS=--max-semi-space-size=2 MALLOC_MMAP_THRESHOLD_=262144
ENTRYPOINT ["flowctl"]
CMD ["--help"]
