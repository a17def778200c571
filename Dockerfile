# Build: docker build -t imaginebot .
# Run:   docker run -e IMAGINEBOT_UPSTREAM_API_KEY=sk-… -e IMAGINEBOT_TELEGRAM_TOKEN=123:abc \
#          -v imaginebot-data:/data imaginebot
# A configuration file is mounted at /config/imaginebot.yaml (optional);
# secrets come from the environment or from files: IMAGINEBOT_<NAME>_FILE.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/imaginebot ./cmd/imaginebot \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/imaginebot /usr/local/bin/imaginebot
# A fresh named volume takes this directory's owner, so nonroot can write it.
COPY --from=build --chown=65532:65532 /out/data /data
# The bbolt ledger lives on the volume; the binary embeds tzdata and CA roots
# come with the base image.
ENV IMAGINEBOT_DB=/data/imaginebot.db
# /healthz, /readyz and /metrics (and webhooks) on 8080: the health check
# needs the listener. No shell or curl here: the binary checks itself.
ENV IMAGINEBOT_HTTP_LISTEN=:8080
VOLUME ["/data"]
EXPOSE 8080
USER nonroot
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/imaginebot", "healthcheck", "-url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/imaginebot"]
CMD ["run"]
