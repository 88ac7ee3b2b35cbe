# Herald: one static binary on a distroless base.
#
#   docker build -t herald:dev .
#   docker run --rm -p 6001:6001 herald:dev        # one node, the dev app
#
# The image runs `herald serve --config /etc/herald/herald.yaml`. The file
# built in below is a single node listening on every interface of the
# container (client port 6001, NATS client port 4222) with its data in
# /var/lib/herald; mount your own file over it (configs/cluster/ shows a
# 3-node cluster with docker compose). HERALD_* variables override the file.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/herald ./cmd/herald
# The default config, and an empty data directory for the non-root user.
RUN mkdir -p /out/etc /out/data \
 && printf '%s\n' \
      '# Built-in container config: a single node; see configs/herald.example.yaml.' \
      'listen: "0.0.0.0:6001"' \
      'data_dir: /var/lib/herald' \
      'bus:' \
      '  client_listen: "0.0.0.0:4222"' \
      > /out/etc/herald.yaml \
 && /out/herald check-config --strict --config /out/etc/herald.yaml

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/herald /usr/local/bin/herald
COPY --from=build /out/etc/herald.yaml /etc/herald/herald.yaml
COPY --from=build --chown=65532:65532 /out/data /var/lib/herald
USER 65532:65532
WORKDIR /var/lib/herald
# /etc/herald: mount herald.yaml here (a ConfigMap, a bind mount); /var/lib/herald: JetStream data.
VOLUME ["/etc/herald", "/var/lib/herald"]
# 6001 WebSocket + REST, 4222 NATS clients (backends), 6222 NATS routes,
# 7946 memberlist (TCP and UDP).
EXPOSE 6001 4222 6222 7946 7946/udp
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["serve", "--config", "/etc/herald/herald.yaml"]
