#!/bin/sh
# Start (or stop) the local servers examples/middleware.yaml checks, all on 127.0.0.1 with their
# data, certificates and logs in DIR:
#   sh examples/middleware-servers.sh start DIR    # then: kubeprober check examples/middleware.yaml
#   sh examples/middleware-servers.sh stop DIR
# Needs the Debian packages etcd-server, mariadb-server-core, mariadb-client-core, redis-server,
# dnsmasq-base and openssl, and a Python with aiohttp (PYTHON, default .venv/bin/python).
# Ports: etcd 23790 (TLS, client certificates; peers 23800), MariaDB 33060, Redis 63790, DNS
# 53530, the shop API 18443 (HTTPS); ETCD_PORT, ETCD_PEER_PORT, MYSQL_PORT, REDIS_PORT, DNS_PORT
# and SHOP_PORT change them (then change the example's too). The example's file paths assume DIR
# is /tmp/kubeprober-middleware.
set -eu
etcd_port=${ETCD_PORT:-23790}
etcd_peer_port=${ETCD_PEER_PORT:-23800}
mysql_port=${MYSQL_PORT:-33060}
redis_port=${REDIS_PORT:-63790}
dns_port=${DNS_PORT:-53530}
shop_port=${SHOP_PORT:-18443}
cmd=${1:?usage: $0 start|stop DIR}
dir=${2:?usage: $0 start|stop DIR}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$here/../.venv/bin/python}

stop() {
    for pidfile in "$dir"/*.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        # Wait until it has exited (a zombie counts: it holds no port), so the ports are free.
        while state=$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null) && [ "$state" != Z ]; do
            sleep 0.05
        done
        rm -f "$pidfile"
    done
}

wait_port() {  # name port: wait until something accepts on 127.0.0.1:port
    tries=300
    until "$python" -c "import socket; socket.create_connection(('127.0.0.1', $2), 0.2)" 2>/dev/null; do
        tries=$((tries - 1))
        if [ "$tries" -le 0 ]; then echo "$1 did not start; see $dir/$1.log" >&2; exit 1; fi
        sleep 0.1
    done
}

run() {  # name command...: start in the background, log and pid in $dir
    name=$1; shift
    "$@" >"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
mkdir -p "$dir"

# A CA, a server certificate for 127.0.0.1 and a client certificate (etcd), valid 30 days.
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=kubeprober-example-ca \
    -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" 2>/dev/null
for who in server client; do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kubeprober-$who" \
        -keyout "$dir/$who-key.pem" -out "$dir/$who.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' \
        >"$dir/$who.ext"
    openssl x509 -req -in "$dir/$who.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
        -CAcreateserial -days 30 -extfile "$dir/$who.ext" -out "$dir/$who.pem" 2>/dev/null
done

run etcd etcd --data-dir "$dir/etcd" \
    --listen-client-urls https://127.0.0.1:$etcd_port --advertise-client-urls https://127.0.0.1:$etcd_port \
    --listen-peer-urls http://127.0.0.1:$etcd_peer_port --initial-advertise-peer-urls http://127.0.0.1:$etcd_peer_port \
    --initial-cluster default=http://127.0.0.1:$etcd_peer_port \
    --cert-file "$dir/server.pem" --key-file "$dir/server-key.pem" \
    --trusted-ca-file "$dir/ca.pem" --client-cert-auth --logger zap --log-level warn

run redis redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir" --save '' --appendonly no \
    --requirepass redis-example-password

run dns dnsmasq --keep-in-foreground --no-resolv --no-hosts --conf-file=/dev/null --pid-file= \
    --bind-interfaces --listen-address=127.0.0.1 --port="$dns_port" --user="$(id -un)" \
    --local=/test/ --host-record=shop.example.test,127.0.0.1

run shop "$python" "$here/shop_app.py" "$shop_port" "$dir/server.pem" "$dir/server-key.pem"

# MariaDB: a fresh data directory, a user "probe" owning database "probe".
mariadb-install-db --no-defaults --datadir="$dir/mariadb" --user="$(id -un)" \
    --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
    --innodb-flush-method=nosync >"$dir/mariadb-install.log" 2>&1
cat >"$dir/init.sql" <<SQL
CREATE DATABASE IF NOT EXISTS probe;
CREATE USER IF NOT EXISTS 'probe'@'127.0.0.1' IDENTIFIED BY 'mysql-example-password';
GRANT ALL ON probe.* TO 'probe'@'127.0.0.1';
SQL
run mariadb mariadbd --no-defaults --datadir="$dir/mariadb" --user="$(id -un)" \
    --bind-address=127.0.0.1 --port="$mysql_port" --socket="$dir/mysqld.sock" \
    --pid-file="$dir/mysqld.pid.txt" --init-file="$dir/init.sql" --skip-name-resolve \
    --innodb-flush-method=nosync --innodb-buffer-pool-size=16M --skip-log-bin

printf 'redis-example-password\n' >"$dir/redis-password"
printf 'mysql-example-password\n' >"$dir/mysql-password"
wait_port etcd "$etcd_port"; wait_port redis "$redis_port"; wait_port dns "$dns_port"
wait_port shop "$shop_port"; wait_port mariadb "$mysql_port"
echo "started in $dir; stop with: sh $0 stop $dir"
