import * as pulumi from '@pulumi/pulumi';

/**
 * Options for a component's children: parented to the component, and depending on whatever the component
 * itself depends on (plus `extra`). Pulumi does not hand a component's dependsOn down to its children, and the
 * children are what must wait, e.g. for the project's APIs to be enabled.
 */
export function childOptions(
  parent: pulumi.ComponentResource,
  opts: pulumi.ComponentResourceOptions | undefined,
  ...extra: pulumi.Resource[]
): pulumi.CustomResourceOptions {
  const inherited = opts?.dependsOn;
  let dependsOn: pulumi.Input<pulumi.Resource>[];
  if (inherited === undefined) dependsOn = [];
  else if (Array.isArray(inherited)) dependsOn = [...(inherited as pulumi.Input<pulumi.Resource>[])];
  else if (pulumi.Resource.isInstance(inherited)) dependsOn = [inherited];
  else throw new Error('components take dependsOn as resources, not as an Output');
  return { parent, dependsOn: [...dependsOn, ...extra] };
}
