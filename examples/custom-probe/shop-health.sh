#!/bin/sh
# A script probe: the shop's health page answers, and so does its login page. Each check is
# reported with `kubeprober report`, which reads where to report from the pod's environment.
shop="${SHOP_URL:-http://shop.shop.svc:8080}"

check() {  # check NAME PATH: PASS if GET PATH answers 2xx, else ERROR with curl's reason
    if why=$(curl -fsS --max-time 5 -o /dev/null "$shop$2" 2>&1); then
        kubeprober report --check "$1" --status PASS
    else
        kubeprober report --check "$1" --status ERROR --message "GET $2: $why"
    fi
}

check health /healthz
check login-page /login
