# syntax=docker/dockerfile:1
#
# Web client image: the Vite build served by unprivileged nginx, which also
# reverse-proxies the API paths to one or more chat-server upstreams with
# SSE-friendly settings (see nginx/default.conf.template).
#
# Build from the repository root:
#   docker build -f deploy/docker/web.Dockerfile -t chat-web .
#
# Runtime configuration (environment):
#   CHAT_API_UPSTREAMS   space-separated host:port list of chat-server
#                        instances (default "api:8000"); every entry becomes a
#                        server line of the nginx upstream.
#   CHAT_PROXY_READ_TIMEOUT  how long a stream may stay silent, or a plain
#                        POST /chat/message wait for its reply (default 3600s).

ARG NODE_VERSION=22
ARG NGINX_VERSION=1.27

FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# nginx-unprivileged runs as uid 101 and listens on 8080; its entrypoint
# renders /etc/nginx/templates/*.template with envsubst and runs the scripts
# in /docker-entrypoint.d/ before starting nginx.
FROM nginxinc/nginx-unprivileged:${NGINX_VERSION}-alpine AS runtime
ENV CHAT_API_UPSTREAMS="api:8000" \
    CHAT_PROXY_READ_TIMEOUT=3600s \
    NGINX_ENVSUBST_FILTER="^CHAT_"
COPY deploy/docker/nginx/default.conf.template /etc/nginx/templates/default.conf.template
COPY --chmod=0755 deploy/docker/nginx/15-chat-upstreams.sh /docker-entrypoint.d/15-chat-upstreams.sh
COPY --from=build /web/dist/ /usr/share/nginx/html/
EXPOSE 8080
USER 101:101
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/nginx-health"]
