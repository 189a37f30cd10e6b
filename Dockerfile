# flowctl in a container. Run it with the host's network, bpffs and namespaces:
#   docker run --privileged --net=host -v /sys/fs/bpf:/sys/fs/bpf -v /run/netns:/run/netns \
#     -v /etc/flowctl:/etc/flowctl flowctl daemon -c /etc/flowctl/config.yaml
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY src ./src
COPY bpf ./bpf
COPY bin ./bin
COPY misc ./misc
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends clang llvm libbpf-dev bpftool iproute2 util-linux \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/flowctl
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/bin ./bin
COPY --from=build /src/bpf ./bpf
RUN ln -s /opt/flowctl/bin/run.js /usr/local/bin/flowctl
ENTRYPOINT ["flowctl"]
CMD ["--help"]
