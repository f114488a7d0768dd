"""The operator's commands (``standby status``, ``standby failover``): they speak to the clusters
only through the Kubernetes API, with the caller's kubeconfig and context, as kubectl does."""
