#!/bin/sh
# Renders the nginx upstream block for the chat API from CHAT_API_UPSTREAMS, a
# space-separated list of host:port entries (one per chat-server replica).
# Runs from the nginx image entrypoint before the templates are rendered.
set -eu

upstreams="${CHAT_API_UPSTREAMS:-api:8000}"
out=/etc/nginx/conf.d/00-chat-upstream.conf

{
    echo "# Generated at container start from CHAT_API_UPSTREAMS=\"${upstreams}\""
    echo "upstream chat_api {"
    echo "    least_conn;"
    for server in ${upstreams}; do
        echo "    server ${server} max_fails=3 fail_timeout=10s;"
    done
    echo "    keepalive 32;"
    # Below chat-server's own idle timeout (server.keep_alive_secs, 5 s by default), so nginx
    # never reuses a connection the server is closing (a POST on it would fail with 502).
    echo "    keepalive_timeout 4s;"
    echo "}"
} > "${out}"

echo "15-chat-upstreams.sh: chat_api upstream -> ${upstreams}"
