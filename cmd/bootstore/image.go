package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/bootstore/bootstore/pkg/gc"
	"github.com/bootstore/bootstore/pkg/store"
)

func newImageCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage the images in the unified store"}
	cmd.AddCommand(newImagePullCommand(g), newImageListCommand(g), newImageSetUnifiedCommand(g),
		newImagePinCommand(g, false), newImagePinCommand(g, true), newImagePushCommand(g),
		newImageSaveCommand(), newImageLoadCommand(g), newImageEmbedCommand())
	return cmd
}

type pullOptions struct {
	registry         registryOptions
	output           outputOptions
	boundImages      string
	allowNonBootable bool
}

func newImagePullCommand(g *globalOptions) *cobra.Command {
	o := &pullOptions{}
	cmd := &cobra.Command{
		Use:   "pull IMAGE",
		Short: "Pull an OS image and all its logically bound images into the unified store",
		Long: `Pull IMAGE (any containers/image transport: docker://, oci:, oci-archive:,
containers-storage:, dir:; a bare name means docker://) into the unified store,
then every image its /usr/lib/bootc/bound-images.d names.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImagePull(cmd, g, o, args[0])
		},
	}
	addRegistryFlags(cmd, &o.registry)
	addOutputFlags(cmd, &o.output)
	cmd.Flags().StringVar(&o.boundImages, "bound-images", "pull", "pull the image's logically bound images too: pull|skip")
	cmd.Flags().BoolVar(&o.allowNonBootable, "allow-non-bootable", false, "pull an image without the containers.bootc=1 or ostree.bootable=1 label")
	return cmd
}

func runImagePull(cmd *cobra.Command, g *globalOptions, o *pullOptions, name string) error {
	if o.boundImages != "pull" && o.boundImages != "skip" {
		return usageError{fmt.Errorf("--bound-images must be pull or skip, not %q", o.boundImages)}
	}
	ref, err := store.ParseReference(name)
	if err != nil {
		return usageError{err}
	}
	bars, sink, closeSink, err := o.output.reporters()
	if err != nil {
		return err
	}
	defer closeSink()
	sess, err := openSession(cmd.Context(), g, true)
	if err != nil {
		return err
	}
	defer sess.Close()
	res, err := sess.store.PullHost(cmd.Context(), ref, store.HostPullOptions{
		PullOptions: store.PullOptions{
			System:          o.registry.systemContext(cmd),
			RequireBootable: !o.allowNonBootable,
			ReportWriter:    bars,
			Progress:        sink,
		},
		SkipBoundImages: o.boundImages == "skip",
	})
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	o.output.say(out, "%s %s %s\n", res.Host.ID, res.Host.Ref, fetchedWord(res.Host.Fetched))
	for _, b := range res.Bound {
		o.output.say(out, "%s %s %s (bound)\n", b.ID, b.Ref, fetchedWord(b.Fetched))
	}
	return nil
}

func fetchedWord(fetched bool) string {
	if fetched {
		return "pulled"
	}
	return "up to date"
}

func newImageListCommand(g *globalOptions) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the images in the unified store and who binds them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "table" && format != "json" {
				return usageError{fmt.Errorf("--format must be table or json, not %q", format)}
			}
			sess, err := openSession(cmd.Context(), g, false)
			if err != nil {
				return err
			}
			defer sess.Close()
			infos, err := gc.Inventory(sess.root, sess.store)
			if err != nil {
				return err
			}
			if format == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(infos)
			}
			printImageTable(cmd, infos)
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "table", "output format: table|json")
	return cmd
}

func printImageTable(cmd *cobra.Command, infos []gc.ImageUse) {
	byID := map[string]gc.ImageUse{}
	for _, i := range infos {
		byID[i.ID] = i
	}
	label := func(id string) string {
		if i, ok := byID[id]; ok && len(i.Names) > 0 {
			return i.Names[0]
		}
		return shortID(id)
	}
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tIMAGE ID\tDIGEST\tSIZE\tUNIQUE\tROLE\tUSED BY")
	for _, i := range infos {
		name := "<none>"
		if len(i.Names) > 0 {
			name = strings.Join(i.Names, ",")
		}
		var roles []string
		for _, r := range i.Roles {
			if r == store.RoleBound {
				var hosts []string
				for _, h := range i.BoundBy {
					hosts = append(hosts, label(h))
				}
				roles = append(roles, "bound by "+strings.Join(hosts, ","))
			} else {
				roles = append(roles, r)
			}
		}
		var users []string
		for _, c := range i.Consumers {
			users = append(users, c.Kind+" "+c.Name)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, shortID(i.ID), shortDigest(i.Digest), units.HumanSize(float64(i.Size)),
			units.HumanSize(float64(i.UniqueBytes)), orDash(strings.Join(roles, "; ")), orDash(strings.Join(users, ", ")))
	}
	w.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func shortDigest(d string) string {
	if _, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		return d[:len(d)-len(hex)] + hex[:12]
	}
	return d
}
