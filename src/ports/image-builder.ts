/** Builds images from Debian's packages on the controller's host (`ferry image build debian`). */
export const IMAGE_RECIPES = ['debian'] as const;
export type ImageRecipe = (typeof IMAGE_RECIPES)[number];

export interface ImageBuilder {
  /** Builds the recipe's image (or finds it cached) and returns its file: a raw disk. */
  build(recipe: ImageRecipe, log: (line: string) => void): Promise<string>;
}
