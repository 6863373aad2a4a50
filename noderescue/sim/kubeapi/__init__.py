"""The emulated Kubernetes API server: storage with resourceVersions and a watch window
(`store`), the HTTP surface real clients use (`server`, `discovery`, `table`), patch types
(`patch`), selectors (`selectors`), Status errors (`status`) and PDB arithmetic (`disruption`).
The cluster dynamics that make it move live in `noderescue.sim.cluster`."""
