package main

import (
	"os"

	"github.com/spf13/cobra"
	"go.podman.io/image/v5/types"
)

// registryOptions are the flags of every command that reaches a registry,
// spelled as podman spells them.
type registryOptions struct {
	authFile        string
	signaturePolicy string
	tlsVerify       bool
	certDir         string
}

func addRegistryFlags(cmd *cobra.Command, o *registryOptions) {
	f := cmd.Flags()
	f.StringVar(&o.authFile, "authfile", os.Getenv("REGISTRY_AUTH_FILE"), "path of the registry credentials file (default: $REGISTRY_AUTH_FILE or containers-auth.json's search path)")
	f.StringVar(&o.signaturePolicy, "signature-policy", "", "path of the signature policy (default: the system's policy.json)")
	f.BoolVar(&o.tlsVerify, "tls-verify", true, "require HTTPS and verify certificates when talking to registries")
	f.StringVar(&o.certDir, "cert-dir", "", "directory of certificates (*.crt, *.cert, *.key) for registries")
}

// systemContext turns the flags into containers/image settings.
// registries.conf and its mirrors and insecure entries apply as usual.
func (o *registryOptions) systemContext(cmd *cobra.Command) *types.SystemContext {
	sys := &types.SystemContext{
		AuthFilePath:        o.authFile,
		SignaturePolicyPath: o.signaturePolicy,
		DockerCertPath:      o.certDir,
	}
	if cmd.Flags().Changed("tls-verify") {
		sys.DockerInsecureSkipTLSVerify = types.NewOptionalBool(!o.tlsVerify)
		sys.OCIInsecureSkipTLSVerify = !o.tlsVerify
	}
	return sys
}
