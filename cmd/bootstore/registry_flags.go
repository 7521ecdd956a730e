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
	registriesConf  string
	registriesD     string
}

func addRegistryFlags(cmd *cobra.Command, o *registryOptions) {
	f := cmd.Flags()
	f.StringVar(&o.authFile, "authfile", os.Getenv("REGISTRY_AUTH_FILE"), "path of the registry credentials file (default: $REGISTRY_AUTH_FILE or containers-auth.json's search path)")
	f.StringVar(&o.signaturePolicy, "signature-policy", "", "path of the signature policy (default: the system's policy.json)")
	f.BoolVar(&o.tlsVerify, "tls-verify", true, "require HTTPS and verify certificates when talking to registries")
	f.StringVar(&o.certDir, "cert-dir", "", "directory of certificates (*.crt, *.cert, *.key) for registries")
	f.StringVar(&o.registriesD, "registries-d", "", "directory of registries.d files (signature storage: lookaside or sigstore attachments; default: the system's)")
	f.StringVar(&o.registriesConf, "registries-conf", "", "path of registries.conf (mirrors, insecure registries; default: $CONTAINERS_REGISTRIES_CONF or the system's)")
}

// systemContext turns the flags into containers/image settings.
// registries.conf and its mirrors and insecure entries apply as usual.
func (o *registryOptions) systemContext(cmd *cobra.Command) *types.SystemContext {
	sys := &types.SystemContext{
		AuthFilePath:        o.authFile,
		SignaturePolicyPath: o.signaturePolicy,
		DockerCertPath:      o.certDir,
		// "" lets containers/image read $CONTAINERS_REGISTRIES_CONF or
		// /etc/containers/registries.conf (and registries.conf.d).
		SystemRegistriesConfPath: o.registriesConf,
		RegistriesDirPath:        o.registriesD,
	}
	if cmd.Flags().Changed("tls-verify") {
		sys.DockerInsecureSkipTLSVerify = types.NewOptionalBool(!o.tlsVerify)
		sys.OCIInsecureSkipTLSVerify = !o.tlsVerify
	}
	return sys
}
